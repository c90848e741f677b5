"""Protobuf message classes for Caffe's messages, built from our schema at run time.

No ``protoc`` and no generated ``caffe_pb2`` file: the schema tables (which carry field
numbers) become a ``FileDescriptorProto`` and then real protobuf classes.  Fields known
in text form only (fork fields that reuse BVLC's numbers) are left out.  Use::

    pb = caffe_pb2()
    net = pb.NetParameter()
    google.protobuf.text_format.Parse(text, net)
"""

from __future__ import annotations

import functools
import types

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from .schema import ENUMS, MESSAGES, SCALAR_TYPES

_PACKAGE = "caffe"
_SCALARS = {
    "double": descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
    "float": descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT,
    "int32": descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
    "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
    "uint32": descriptor_pb2.FieldDescriptorProto.TYPE_UINT32,
    "uint64": descriptor_pb2.FieldDescriptorProto.TYPE_UINT64,
    "bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
    "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    "bytes": descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
}
_PACKED = {"data", "diff", "double_data", "double_diff", "dim"}


def _default_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    from ..layers.registry import registered

    registered()  # fork layers add their messages first
    fd = descriptor_pb2.FileDescriptorProto(name="proto2torch_caffe.proto", package=_PACKAGE, syntax="proto2")
    owners = _enum_owners()
    for enum in ENUMS.values():
        if owners[enum.name] is None:
            _add_enum(fd.enum_type, enum.name)
    for message in MESSAGES.values():
        m = fd.message_type.add(name=message.name)
        for enum_name, owner in owners.items():
            if owner == message.name:
                _add_enum(m.enum_type, enum_name)
        for f in message.fields.values():
            if f.number is None:
                continue
            field = m.field.add(name=f.name, number=f.number)
            field.label = field.LABEL_REPEATED if f.repeated else field.LABEL_OPTIONAL
            if f.type in SCALAR_TYPES:
                field.type = _SCALARS[f.type]
                if f.repeated and f.name in _PACKED:
                    field.options.packed = True
            elif f.type in ENUMS:
                field.type = field.TYPE_ENUM
                owner = owners[f.type]
                field.type_name = f".{_PACKAGE}." + (f"{owner}.{f.type}" if owner else f.type)
            else:
                field.type = field.TYPE_MESSAGE
                field.type_name = f".{_PACKAGE}.{f.type}"
            if f.default is not None and not f.repeated:
                field.default_value = _default_text(f.default)
    return fd


def _add_enum(container, name: str) -> None:  # noqa: ANN001
    e = container.add(name=name)
    for value, number in ENUMS[name].values.items():
        e.value.add(name=value, number=number)


def _enum_owners() -> dict[str, str | None]:
    """Protobuf scopes enum value names like siblings of the enum, so enums sharing value names
    (PoolMethod's MAX, EltwiseOp's MAX) must not share a scope: nest each in a message using it."""
    scopes: dict[str | None, set[str]] = {}
    owners: dict[str, str | None] = {}
    for enum in ENUMS.values():
        users = [m.name for m in MESSAGES.values() if any(f.type == enum.name for f in m.fields.values())]
        for owner in [*users, None]:
            taken = scopes.setdefault(owner, set())
            if not taken & set(enum.values):
                taken.update(enum.values)
                owners[enum.name] = owner
                break
        else:  # pragma: no cover - every enum fits somewhere in practice
            raise ValueError(f"no scope for enum {enum.name}")
    return owners


@functools.cache
def caffe_pb2() -> types.SimpleNamespace:
    """A namespace of protobuf classes: ``caffe_pb2().NetParameter``, ``.BlobProto``…"""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_descriptor())
    classes = {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}")) for name in MESSAGES}
    return types.SimpleNamespace(**classes)
