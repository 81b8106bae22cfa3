"""gRPC face of the customers module: translates protobuf to plain values and back.
Rules live in the service layer; errors become statuses in services.core.rpc.statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import timedelta
from typing import Any, TypeAlias

import grpc
from commerce.customers.v1 import customer_pb2, customer_service_pb2_grpc
from commerce.customers.v1 import customer_service_pb2 as pb
from google.protobuf import any_pb2

from services.core.domain.errors import InvalidArgument
from services.core.events.feed_snapshots import FeedSnapshots
from services.core.modules import ModuleContext
from services.core.rpc.callers import caller_identity
from services.core.rpc.convert import masked_changes, require_resource, values_from
from services.customers.addresses import AddressService
from services.customers.data_export import (
    SOURCE,
    CustomerDataExport,
    ExportPart,
    ModuleRecord,
)
from services.customers.messages import (
    address_to_proto,
    customer_to_proto,
    metric_to_proto,
    register_event_encoders,
)
from services.customers.models import CustomerSnapshot
from services.customers.rules import (
    ADDRESS_WRITABLE_FIELDS,
    CUSTOMER_WRITABLE_FIELDS,
    LoginPolicy,
)
from services.customers.service import CustomerService, NewCustomer

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

_ACTIVE_BY_STATUS: dict[int, bool] = {
    customer_pb2.CUSTOMER_STATUS_ACTIVE: True,
    customer_pb2.CUSTOMER_STATUS_INACTIVE: False,
}


def _active_filter(status: int) -> bool | None:
    """ListCustomers' status filter: UNSPECIFIED means any status."""
    if status in (customer_pb2.CUSTOMER_STATUS_UNSPECIFIED, customer_pb2.CUSTOMER_STATUS_ERASED):
        return None
    return _active_from_status(status)


def _erased_filter(status: int) -> bool:
    """ListCustomers' status filter CUSTOMER_STATUS_ERASED: the erased customers only
    (each of which is inactive too, but not listed as INACTIVE)."""
    return status == customer_pb2.CUSTOMER_STATUS_ERASED


def _active_from_status(status: int) -> bool:
    if status not in _ACTIVE_BY_STATUS:
        raise InvalidArgument.of(
            "status", "must be CUSTOMER_STATUS_ACTIVE or CUSTOMER_STATUS_INACTIVE"
        )
    return _ACTIVE_BY_STATUS[status]


def _export_part(part: ExportPart) -> pb.ExportCustomerDataResponse:
    """One part of ExportCustomerData; a module's record as an Any of its own type."""
    if isinstance(part, ModuleRecord):
        record = any_pb2.Any(
            type_url=f"type.googleapis.com/{part.record.type_name}", value=part.record.payload
        )
        return pb.ExportCustomerDataResponse(source=part.source, record=record)
    if isinstance(part, CustomerSnapshot):
        return pb.ExportCustomerDataResponse(source=SOURCE, customer=customer_to_proto(part))
    return pb.ExportCustomerDataResponse(source=SOURCE, address=address_to_proto(part))


class CustomerServicer(customer_service_pb2_grpc.CustomerServiceServicer):
    def __init__(
        self, service: CustomerService, addresses: AddressService, data_export: CustomerDataExport
    ) -> None:
        self._service = service
        self._addresses = addresses
        self._data_export = data_export

    async def CreateCustomer(
        self, request: pb.CreateCustomerRequest, context: Context
    ) -> pb.CreateCustomerResponse:
        new = values_from(NewCustomer, request)
        customer = await self._service.create_customer(
            request.store_id, new, request_id=request.request_id
        )
        return pb.CreateCustomerResponse(customer=customer_to_proto(customer))

    async def GetCustomer(
        self, request: pb.GetCustomerRequest, context: Context
    ) -> pb.GetCustomerResponse:
        customer = await self._service.get_customer(request.store_id, request.customer_id)
        return pb.GetCustomerResponse(customer=customer_to_proto(customer))

    async def BatchGetCustomers(
        self, request: pb.BatchGetCustomersRequest, context: Context
    ) -> pb.BatchGetCustomersResponse:
        customers = await self._service.batch_get_customers(request.store_id, request.customer_ids)
        return pb.BatchGetCustomersResponse(
            customers=[customer_to_proto(customer) for customer in customers]
        )

    async def UpdateCustomer(
        self, request: pb.UpdateCustomerRequest, context: Context
    ) -> pb.UpdateCustomerResponse:
        changes = masked_changes(request.update_mask, request.customer, CUSTOMER_WRITABLE_FIELDS)
        require_resource(request, "customer")
        if "tags" in changes:  # a repeated field: its container, copied while it lives
            changes["tags"] = list(changes["tags"])
        customer = await self._service.update_customer(
            request.store_id, request.customer_id, changes, etag=request.customer.etag
        )
        return pb.UpdateCustomerResponse(customer=customer_to_proto(customer))

    async def ListCustomers(
        self, request: pb.ListCustomersRequest, context: Context
    ) -> pb.ListCustomersResponse:
        page = await self._service.list_customers(
            request.store_id,
            page_size=request.page_size,
            page_token=request.page_token,
            active=_active_filter(request.status),
            query=request.query,
            tag=request.tag,
            erased=_erased_filter(request.status),
        )
        return pb.ListCustomersResponse(
            customers=[customer_to_proto(customer) for customer in page.customers],
            next_page_token=page.next_page_token,
        )

    async def AddCustomerTags(
        self, request: pb.AddCustomerTagsRequest, context: Context
    ) -> pb.AddCustomerTagsResponse:
        customer = await self._service.add_customer_tags(
            request.store_id, request.customer_id, list(request.tags), etag=request.etag
        )
        return pb.AddCustomerTagsResponse(customer=customer_to_proto(customer))

    async def RemoveCustomerTags(
        self, request: pb.RemoveCustomerTagsRequest, context: Context
    ) -> pb.RemoveCustomerTagsResponse:
        customer = await self._service.remove_customer_tags(
            request.store_id, request.customer_id, list(request.tags), etag=request.etag
        )
        return pb.RemoveCustomerTagsResponse(customer=customer_to_proto(customer))

    async def SetCustomerStatus(
        self, request: pb.SetCustomerStatusRequest, context: Context
    ) -> pb.SetCustomerStatusResponse:
        customer = await self._service.set_customer_status(
            request.store_id,
            request.customer_id,
            _active_from_status(request.status),
            etag=request.etag,
        )
        return pb.SetCustomerStatusResponse(customer=customer_to_proto(customer))

    async def AuthenticateCustomer(
        self, request: pb.AuthenticateCustomerRequest, context: Context
    ) -> pb.AuthenticateCustomerResponse:
        customer = await self._service.authenticate(
            request.store_id, request.email, request.password, caller=caller_identity(context)
        )
        return pb.AuthenticateCustomerResponse(customer=customer_to_proto(customer))

    async def ChangeCustomerPassword(
        self, request: pb.ChangeCustomerPasswordRequest, context: Context
    ) -> pb.ChangeCustomerPasswordResponse:
        customer = await self._service.change_password(
            request.store_id, request.customer_id, request.current_password, request.new_password
        )
        return pb.ChangeCustomerPasswordResponse(customer=customer_to_proto(customer))

    async def EraseCustomer(
        self, request: pb.EraseCustomerRequest, context: Context
    ) -> pb.EraseCustomerResponse:
        customer = await self._service.erase_customer(request.store_id, request.customer_id)
        return pb.EraseCustomerResponse(customer=customer_to_proto(customer))

    async def CreateCustomerAddress(
        self, request: pb.CreateCustomerAddressRequest, context: Context
    ) -> pb.CreateCustomerAddressResponse:
        fields = {name: getattr(request.address, name) for name in ADDRESS_WRITABLE_FIELDS}
        address = await self._addresses.create_address(
            request.store_id, request.customer_id, fields, request_id=request.request_id
        )
        return pb.CreateCustomerAddressResponse(address=address_to_proto(address))

    async def UpdateCustomerAddress(
        self, request: pb.UpdateCustomerAddressRequest, context: Context
    ) -> pb.UpdateCustomerAddressResponse:
        changes = masked_changes(request.update_mask, request.address, ADDRESS_WRITABLE_FIELDS)
        require_resource(request, "address")
        address = await self._addresses.update_address(
            request.store_id,
            request.customer_id,
            request.address_id,
            changes,
            etag=request.address.etag,
        )
        return pb.UpdateCustomerAddressResponse(address=address_to_proto(address))

    async def DeleteCustomerAddress(
        self, request: pb.DeleteCustomerAddressRequest, context: Context
    ) -> pb.DeleteCustomerAddressResponse:
        await self._addresses.delete_address(
            request.store_id, request.customer_id, request.address_id, etag=request.etag
        )
        return pb.DeleteCustomerAddressResponse()

    async def ListCustomerAddresses(
        self, request: pb.ListCustomerAddressesRequest, context: Context
    ) -> pb.ListCustomerAddressesResponse:
        page = await self._addresses.list_addresses(
            request.store_id,
            request.customer_id,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListCustomerAddressesResponse(
            addresses=[address_to_proto(address) for address in page.addresses],
            next_page_token=page.next_page_token,
        )

    async def GetCustomerMetrics(
        self, request: pb.GetCustomerMetricsRequest, context: Context
    ) -> pb.GetCustomerMetricsResponse:
        by_source = await self._service.customer_metrics(request.store_id, request.customer_id)
        return pb.GetCustomerMetricsResponse(
            metrics=[
                metric_to_proto(source, metric, money_values=request.money_values)
                for source, metrics in by_source.items()
                for metric in metrics
            ]
        )

    async def ExportCustomerData(
        self, request: pb.ExportCustomerDataRequest, context: Context
    ) -> AsyncIterator[pb.ExportCustomerDataResponse]:
        # Sent as read, each part once the caller took the last (HTTP/2 flow
        # control); closed as soon as the call ends, which ends the snapshot.
        parts = self._data_export.stream(request.store_id, request.customer_id)
        async with aclosing(parts):
            async for part in parts:
                yield _export_part(part)

    async def ExportCustomers(
        self, request: pb.ExportCustomersRequest, context: Context
    ) -> AsyncIterator[pb.ExportCustomersResponse]:
        # Each message is yielded once the caller took the last (the RPC guard
        # awaits every write), so the next batch is read only then.
        async with (
            self._service.export_customers(
                request.store_id,
                active=_active_filter(request.status),
                erased=_erased_filter(request.status),
                tag=request.tag,
                after_customer_id=request.after_customer_id,
            ) as export,
            aclosing(export.batches()) as batches,
        ):
            async for batch in batches:
                yield pb.ExportCustomersResponse(
                    customers=[customer_to_proto(customer) for customer in batch],
                    event_cursor=export.event_cursor,
                )


def mount(server: grpc.aio.Server, context: ModuleContext) -> list[str]:
    """Adds CustomerService to `server`; returns its full name."""
    settings = context.settings
    login_policy = LoginPolicy(
        per_email=settings.login_failures_per_email,
        per_caller=settings.login_failures_per_caller,
        window=timedelta(seconds=settings.login_window_seconds),
    )
    # One for both exports: together they hold at most the snapshots it allows.
    snapshots = FeedSnapshots(context.database, on_placed=context.events_placed.notify)
    service = CustomerService(
        context.database,
        context.passwords,
        context.page_tokens,
        context.customer_metrics,
        login_policy,
        context.customer_data,
        snapshots,
    )
    register_event_encoders(context.database.event_encoders)
    customer_service_pb2_grpc.add_CustomerServiceServicer_to_server(
        CustomerServicer(
            service,
            AddressService(context.database, context.page_tokens),
            CustomerDataExport(snapshots, context.customer_data),
        ),
        server,
    )
    return [pb.DESCRIPTOR.services_by_name["CustomerService"].full_name]
