"""The HTTP gateway: plain HTTP/1.1 (what curl and browsers speak) in front of the
process's own gRPC server, in two protocols on one port: REST at the paths of the
methods' google.api.http rules (JSON, transcoded as Google's HTTP/JSON transcoding
does), and the Connect protocol (JSON or binary protobuf) at
/<package>.<Service>/<Method>.

Each unary method of the mounted services becomes a Connect endpoint and a REST route,
built from the service descriptors alone (this package knows no module). Both
forward the call over a private channel to the gRPC server of the same process, so
every server interceptor (caller authentication, drain, admission, deadlines,
metrics, logging, the error statuses) applies to an HTTP call exactly as to a gRPC
one; the gateway only translates: headers to metadata, `connect-timeout-ms` to the
deadline, statuses with their google.rpc details to error bodies (Connect's, or
google.rpc.Status JSON on REST paths)."""
