"""The HTTP gateway: the Connect protocol (HTTP/1.1, JSON or binary protobuf; what
curl and browsers speak) in front of the process's own gRPC server.

Each unary method of the mounted services becomes a Connect endpoint, built from the
service descriptors alone (this package knows no module). An endpoint forwards its
call over a private channel to the gRPC server of the same process, so every server
interceptor (caller authentication, drain, admission, deadlines, metrics, logging,
the error statuses) applies to an HTTP call exactly as to a gRPC one; the gateway only
translates: headers to metadata, `connect-timeout-ms` to the deadline, statuses with
their google.rpc details to Connect error bodies."""
