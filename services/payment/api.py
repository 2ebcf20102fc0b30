"""Payment's gRPC API: decode, call a query, encode. No rules here."""

from __future__ import annotations

from shop.common.v1 import common_pb2
from shop.payment.v1 import payment_pb2, payment_pb2_grpc

from services.payment.domain import Payment, PaymentStatus
from services.payment.storage import repository
from shopmesh.errors import NotFound
from shopmesh.identity import caller_from_metadata
from shopmesh.rpc import Context
from shopmesh.server import Runtime

_STATUS = {
    PaymentStatus.COMPLETED: payment_pb2.PAYMENT_STATUS_COMPLETED,
    PaymentStatus.FAILED: payment_pb2.PAYMENT_STATUS_FAILED,
    PaymentStatus.REFUNDED: payment_pb2.PAYMENT_STATUS_REFUNDED,
}


def payment_pb(payment: Payment) -> payment_pb2.Payment:
    return payment_pb2.Payment(
        payment_id=payment.payment_id,
        order_id=payment.order_id,
        user_id=payment.user_id,
        amount=common_pb2.Money(amount_minor=payment.amount_minor, currency=payment.currency),
        status=_STATUS[payment.status],
        reason=payment.reason,
        processed_by=payment.processed_by,
        created_at=payment.created_at,
        updated_at=payment.updated_at,
    )


class PaymentApi(payment_pb2_grpc.PaymentServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def GetPayment(
        self, request: payment_pb2.GetPaymentRequest, context: Context
    ) -> payment_pb2.GetPaymentResponse:
        caller = caller_from_metadata(context.invocation_metadata())
        async with self.runtime.db.reader.connect() as conn:
            payment = await repository.get_payment(conn, request.payment_id)
        # Another user's payment is "not found" too, so ids reveal nothing.
        if payment is None or not caller.may_read(payment.user_id):
            raise NotFound(f"no payment {request.payment_id}")
        return payment_pb2.GetPaymentResponse(payment=payment_pb(payment))

    async def ListPayments(
        self, request: payment_pb2.ListPaymentsRequest, context: Context
    ) -> payment_pb2.ListPaymentsResponse:
        caller = caller_from_metadata(context.invocation_metadata())
        owner = None if caller.is_privileged else caller.user_id
        async with self.runtime.db.reader.connect() as conn:
            payments = await repository.list_payments(conn, request.order_id, owner)
        return payment_pb2.ListPaymentsResponse(payments=[payment_pb(p) for p in payments])
