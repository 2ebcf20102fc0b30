from shop.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StockReserved(_message.Message):
    __slots__ = ("meta", "order_id", "items")
    META_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.EventMeta
    order_id: str
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.LineItem]
    def __init__(self, meta: _Optional[_Union[_common_pb2.EventMeta, _Mapping]] = ..., order_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[_common_pb2.LineItem, _Mapping]]] = ...) -> None: ...

class StockRejected(_message.Message):
    __slots__ = ("meta", "order_id", "reason", "product_ids")
    META_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.EventMeta
    order_id: str
    reason: str
    product_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, meta: _Optional[_Union[_common_pb2.EventMeta, _Mapping]] = ..., order_id: _Optional[str] = ..., reason: _Optional[str] = ..., product_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class StockReleased(_message.Message):
    __slots__ = ("meta", "order_id", "items")
    META_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.EventMeta
    order_id: str
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.LineItem]
    def __init__(self, meta: _Optional[_Union[_common_pb2.EventMeta, _Mapping]] = ..., order_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[_common_pb2.LineItem, _Mapping]]] = ...) -> None: ...
