"""gRPC face of the customers module: translates protobuf to plain values and back.
Rules live in the service layer; errors become statuses in services.core.grpc_errors."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeAlias

import grpc
from commerce.customers.v1 import customer_pb2, customer_service_pb2_grpc
from commerce.customers.v1 import customer_service_pb2 as pb

from services.core.customer_metrics import CustomerMetric
from services.core.errors import InvalidArgument
from services.core.grpc_support import masked_changes, timestamp
from services.core.modules import ModuleContext
from services.customers.models import Customer, CustomerAddress, CustomerSnapshot
from services.customers.service import (
    ADDRESS_WRITABLE_FIELDS,
    CUSTOMER_WRITABLE_FIELDS,
    CustomerService,
    NewCustomer,
    customer_etag,
)

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

_ACTIVE_BY_STATUS: dict[int, bool] = {
    customer_pb2.CUSTOMER_STATUS_ACTIVE: True,
    customer_pb2.CUSTOMER_STATUS_INACTIVE: False,
}


def customer_to_proto(customer: Customer | CustomerSnapshot) -> customer_pb2.Customer:
    return customer_pb2.Customer(
        store_id=customer.store_id,
        customer_id=customer.customer_id,
        customer_number=customer.customer_number,
        email=customer.email,
        first_name=customer.first_name,
        last_name=customer.last_name,
        phone=customer.phone,
        marketing_consent=customer.marketing_consent,
        preferred_language=customer.preferred_language,
        status=customer_pb2.CUSTOMER_STATUS_ACTIVE
        if customer.is_active
        else customer_pb2.CUSTOMER_STATUS_INACTIVE,
        has_password=customer.hashed_password is not None,
        create_time=timestamp(customer.created_at),
        update_time=timestamp(customer.updated_at),
        etag=customer_etag(customer),
    )


def address_to_proto(address: CustomerAddress) -> customer_pb2.CustomerAddress:
    return customer_pb2.CustomerAddress(
        store_id=address.store_id,
        customer_id=address.customer_id,
        address_id=address.address_id,
        recipient_name=address.recipient_name,
        address_line1=address.address_line1,
        address_line2=address.address_line2,
        city=address.city,
        postal_code=address.postal_code,
        region=address.region,
        country_code=address.country_code,
        phone=address.phone,
        default_shipping=address.default_shipping,
        default_billing=address.default_billing,
        create_time=timestamp(address.created_at),
        update_time=timestamp(address.updated_at),
    )


def _active_filter(status: int) -> bool | None:
    """ListCustomers' status filter: UNSPECIFIED means any status."""
    if status == customer_pb2.CUSTOMER_STATUS_UNSPECIFIED:
        return None
    return _active_from_status(status)


def _active_from_status(status: int) -> bool:
    if status not in _ACTIVE_BY_STATUS:
        raise InvalidArgument.of(
            "status", "must be CUSTOMER_STATUS_ACTIVE or CUSTOMER_STATUS_INACTIVE"
        )
    return _ACTIVE_BY_STATUS[status]


class CustomerServicer(customer_service_pb2_grpc.CustomerServiceServicer):
    def __init__(self, service: CustomerService) -> None:
        self._service = service

    async def CreateCustomer(
        self, request: pb.CreateCustomerRequest, context: Context
    ) -> pb.CreateCustomerResponse:
        new = NewCustomer(
            email=request.email,
            password=request.password,
            first_name=request.first_name,
            last_name=request.last_name,
            phone=request.phone,
            marketing_consent=request.marketing_consent,
            preferred_language=request.preferred_language,
        )
        customer = await self._service.create_customer(
            request.store_id, new, request_id=request.request_id
        )
        return pb.CreateCustomerResponse(customer=customer_to_proto(customer))

    async def GetCustomer(
        self, request: pb.GetCustomerRequest, context: Context
    ) -> pb.GetCustomerResponse:
        customer = await self._service.get_customer(request.store_id, request.customer_id)
        return pb.GetCustomerResponse(customer=customer_to_proto(customer))

    async def UpdateCustomer(
        self, request: pb.UpdateCustomerRequest, context: Context
    ) -> pb.UpdateCustomerResponse:
        changes = masked_changes(request.update_mask, request.customer, CUSTOMER_WRITABLE_FIELDS)
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
        )
        return pb.ListCustomersResponse(
            customers=[customer_to_proto(customer) for customer in page.customers],
            next_page_token=page.next_page_token,
        )

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
            request.store_id, request.email, request.password
        )
        return pb.AuthenticateCustomerResponse(customer=customer_to_proto(customer))

    async def ChangeCustomerPassword(
        self, request: pb.ChangeCustomerPasswordRequest, context: Context
    ) -> pb.ChangeCustomerPasswordResponse:
        customer = await self._service.change_password(
            request.store_id, request.customer_id, request.current_password, request.new_password
        )
        return pb.ChangeCustomerPasswordResponse(customer=customer_to_proto(customer))

    async def CreateCustomerAddress(
        self, request: pb.CreateCustomerAddressRequest, context: Context
    ) -> pb.CreateCustomerAddressResponse:
        fields = {name: getattr(request.address, name) for name in ADDRESS_WRITABLE_FIELDS}
        address = await self._service.create_address(
            request.store_id, request.customer_id, fields, request_id=request.request_id
        )
        return pb.CreateCustomerAddressResponse(address=address_to_proto(address))

    async def UpdateCustomerAddress(
        self, request: pb.UpdateCustomerAddressRequest, context: Context
    ) -> pb.UpdateCustomerAddressResponse:
        changes = masked_changes(request.update_mask, request.address, ADDRESS_WRITABLE_FIELDS)
        address = await self._service.update_address(
            request.store_id, request.customer_id, request.address_id, changes
        )
        return pb.UpdateCustomerAddressResponse(address=address_to_proto(address))

    async def DeleteCustomerAddress(
        self, request: pb.DeleteCustomerAddressRequest, context: Context
    ) -> pb.DeleteCustomerAddressResponse:
        await self._service.delete_address(
            request.store_id, request.customer_id, request.address_id
        )
        return pb.DeleteCustomerAddressResponse()

    async def ListCustomerAddresses(
        self, request: pb.ListCustomerAddressesRequest, context: Context
    ) -> pb.ListCustomerAddressesResponse:
        addresses = await self._service.list_addresses(request.store_id, request.customer_id)
        return pb.ListCustomerAddressesResponse(
            addresses=[address_to_proto(address) for address in addresses]
        )

    async def GetCustomerMetrics(
        self, request: pb.GetCustomerMetricsRequest, context: Context
    ) -> pb.GetCustomerMetricsResponse:
        by_source = await self._service.customer_metrics(request.store_id, request.customer_id)
        return pb.GetCustomerMetricsResponse(
            metrics=[
                metric_to_proto(source, metric)
                for source, metrics in by_source.items()
                for metric in metrics
            ]
        )


def metric_to_proto(source: str, metric: CustomerMetric) -> customer_pb2.CustomerMetric:
    message = customer_pb2.CustomerMetric(
        source=source, name=metric.name, label=metric.label, currency_code=metric.currency_code
    )
    if isinstance(metric.value, datetime):
        message.time_value.CopyFrom(timestamp(metric.value))
    elif metric.value is not None:
        message.int_value = metric.value
    return message


def mount(server: grpc.aio.Server, context: ModuleContext) -> list[str]:
    """Adds CustomerService to `server`; returns its full name."""
    service = CustomerService(
        context.database, context.passwords, context.page_tokens, context.customer_metrics
    )
    customer_service_pb2_grpc.add_CustomerServiceServicer_to_server(
        CustomerServicer(service), server
    )
    return [pb.DESCRIPTOR.services_by_name["CustomerService"].full_name]
