"""Whatever arrives, notification answers with a clear code and keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import grpc
import pytest
from google.protobuf.message import Message
from hypothesis import strategies as st
from shop.notification.v1 import notification_pb2 as pb

from services.notification.main import SPEC
from services.user.main import SPEC as USER_SPEC
from shopmesh import paging
from tests.support.fuzz import assert_clear_codes, call_unary, messages
from tests.support.inprocess import as_user, running_in_thread

pytestmark = pytest.mark.integration

METHOD = "/shop.notification.v1.NotificationService/ListNotifications"
CUSTOMER = as_user("00000000-0000-4000-8000-000000000002")


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    with (
        running_in_thread(USER_SPEC, tmp_path_factory.mktemp("user")) as user,
        running_in_thread(
            SPEC, tmp_path_factory.mktemp("notification"), upstreams={"user": user}
        ) as address,
        grpc.insecure_channel(address) as channel,
    ):
        yield channel


# Page tokens that decode as ours but hold anything: text, or times in any zone or none.
_OFFSETS = st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
_TIMES = st.builds(
    lambda time, zone: time.replace(tzinfo=zone),
    st.sampled_from([datetime.min, datetime.max]) | st.datetimes(),  # the edges overflow in UTC
    st.none() | st.builds(timezone, _OFFSETS),
)
_KEYS = st.lists(st.text(max_size=40), max_size=3) | st.tuples(
    _TIMES.map(datetime.isoformat), st.uuids().map(str)
)
_TOKENS = _KEYS.map(lambda key: paging.encode(*key))


def test_arbitrary_requests_get_clear_codes(channel: grpc.Channel) -> None:
    def with_token(request: pb.ListNotificationsRequest, token: str | None) -> Message:
        if token is not None:
            request.page_token = token
        return request

    requests = st.builds(with_token, messages(pb.ListNotificationsRequest), st.none() | _TOKENS)
    assert_clear_codes(
        channel, METHOD, requests, pb.ListNotificationsResponse, [(), CUSTOMER], examples=80
    )
    # Still serving after all that.
    assert (
        call_unary(
            channel, METHOD, pb.ListNotificationsRequest(), pb.ListNotificationsResponse, CUSTOMER
        )
        == grpc.StatusCode.OK
    )


INVALID: list[Message] = [
    pb.ListNotificationsRequest(page_size=-1),
    pb.ListNotificationsRequest(page_size=101),
    pb.ListNotificationsRequest(page_token="x" * 5000),
    pb.ListNotificationsRequest(page_token="not-a-token"),
]


@pytest.mark.parametrize("request_message", INVALID)
def test_invalid_requests_are_invalid_argument(
    channel: grpc.Channel, request_message: Message
) -> None:
    code = call_unary(channel, METHOD, request_message, pb.ListNotificationsResponse, CUSTOMER)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
