"""Writes the part of Modal's gRPC API that agentform speaks as `.proto` files.

The official `modal` wheel ships no `.proto` files, only the serialized
descriptors inside `modal_proto/*_pb2.py`. This reads them from the wheel
(`python modal-proto.py WHEEL OUT_DIR`), keeps the methods listed in `KEEP`
and every type they reach (each kept message whole: all its fields, nested
types and enums), and renders them as proto3 source under
`OUT_DIR/modal_proto/`. `build.rs` compiles that source with protox and
tonic-prost-build, so a build needs no `protoc`.

Needs the `protobuf` package (the venv of `scripts/modal-proto.sh` has it).
Run `scripts/modal-proto.sh` rather than this file.
"""

import ast
import hashlib
import importlib
import sys
import zipfile

from google.protobuf import descriptor_pb2

# The methods agentform calls (`src/sandbox/modal/`) and those the official
# client calls in `tests/sdk/modal_lifecycle.py`, which the fake Modal of
# the tests serves. Order does not matter: files keep the wheel's order.
KEEP = {
    "modal.client.ModalClient": [
        "AppGetOrCreate",
        "AuthTokenGet",
        "BlobCreate",
        "EnvironmentGetOrCreate",
        "ImageGetOrCreate",
        "ImageJoinStreaming",
        "MountBatchedCheckExistence",
        "MountGetOrCreate",
        "MountPutFile",
        "SandboxCreateV2",
        "SandboxGetCommandRouterAccess",
        "SandboxGetTaskIdV2",
        "SandboxGetTunnelsV2",
        "SandboxListV2",
        "SandboxTagsGetV2",
        "SandboxTagsSetV2",
        "SandboxTerminateV2",
        "SandboxWaitV2",
    ],
    "modal.task_command_router.TaskCommandRouter": [
        "TaskExecPoll",
        "TaskExecStart",
        "TaskExecStdinWrite",
        "TaskExecStdioRead",
        "TaskExecWait",
    ],
}

FILES = ["modal_proto/api_pb2.py", "modal_proto/task_command_router_pb2.py"]

SCALARS = {
    descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE: "double",
    descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT: "float",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT64: "int64",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT64: "uint64",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT32: "int32",
    descriptor_pb2.FieldDescriptorProto.TYPE_FIXED64: "fixed64",
    descriptor_pb2.FieldDescriptorProto.TYPE_FIXED32: "fixed32",
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: "bool",
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING: "string",
    descriptor_pb2.FieldDescriptorProto.TYPE_BYTES: "bytes",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT32: "uint32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SFIXED32: "sfixed32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SFIXED64: "sfixed64",
    descriptor_pb2.FieldDescriptorProto.TYPE_SINT32: "sint32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SINT64: "sint64",
}


def serialized_descriptor(source: str) -> bytes:
    """The bytes passed to `AddSerializedFile(...)` in a generated `_pb2.py`."""
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "AddSerializedFile"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, bytes)
        ):
            return node.args[0].value
    raise SystemExit("no AddSerializedFile(b'...') call found")


class Index:
    """Every message and enum of the files, by full name (`.pkg.Outer.Inner`)."""

    def __init__(self, files):
        self.types = {}
        for f in files:
            self._walk("." + f.package, f.message_type, f.enum_type)

    def _walk(self, prefix, messages, enums):
        for e in enums:
            self.types[prefix + "." + e.name] = e
        for m in messages:
            name = prefix + "." + m.name
            self.types[name] = m
            self._walk(name, m.nested_type, m.enum_type)


def reachable(files, index):
    """Full names of the types the kept methods reach, with their parents."""
    roots = []
    for f in files:
        for service in f.service:
            wanted = KEEP.get(f.package + "." + service.name, [])
            found = {m.name for m in service.method}
            missing = sorted(set(wanted) - found)
            if missing:
                raise SystemExit(f"{service.name} has no method {', '.join(missing)}")
            for m in service.method:
                if m.name in wanted:
                    roots += [m.input_type, m.output_type]
    seen = set()
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        # A nested type needs its parents.
        parent = name.rsplit(".", 1)[0]
        if parent in index.types:
            stack.append(parent)
        d = index.types.get(name)
        if isinstance(d, descriptor_pb2.DescriptorProto):
            stack += [f.type_name for f in d.field if f.type_name]
            stack += [name + "." + n.name for n in d.nested_type]
            stack += [name + "." + e.name for e in d.enum_type]
    return seen


class Writer:
    def __init__(self, package, index):
        self.package = package
        self.index = index
        self.lines = []

    def line(self, depth, text):
        self.lines.append("  " * depth + text if text else "")

    def type_name(self, name):
        """A type's name as written: relative within the package, else full."""
        prefix = "." + self.package + "."
        return name[len(prefix):] if name.startswith(prefix) else name

    def field_type(self, f):
        if f.type_name:
            return self.type_name(f.type_name)
        return SCALARS[f.type]

    def options(self, f):
        opts = []
        if f.options.deprecated:
            opts.append("deprecated = true")
        if f.options.HasField("jstype"):
            opts.append("jstype = " + descriptor_pb2.FieldOptions.JSType.Name(f.options.jstype))
        if f.options.HasField("packed"):
            opts.append("packed = " + ("true" if f.options.packed else "false"))
        return f" [{', '.join(opts)}]" if opts else ""

    def field(self, depth, f, maps, in_oneof):
        if f.type_name in maps:
            entry = maps[f.type_name]
            key, value = entry.field[0], entry.field[1]
            text = f"map<{self.field_type(key)}, {self.field_type(value)}> {f.name} = {f.number}"
        else:
            label = ""
            if f.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED:
                label = "repeated "
            elif f.proto3_optional:
                label = "optional "
            assert in_oneof or not f.HasField("oneof_index") or f.proto3_optional
            text = f"{label}{self.field_type(f)} {f.name} = {f.number}"
        self.line(depth, text + self.options(f) + ";")

    def enum(self, depth, e):
        self.line(depth, f"enum {e.name} {{")
        if e.options.allow_alias:
            self.line(depth + 1, "option allow_alias = true;")
        for v in e.value:
            deprecated = " [deprecated = true]" if v.options.deprecated else ""
            self.line(depth + 1, f"{v.name} = {v.number}{deprecated};")
        self.line(depth, "}")

    def message(self, depth, name, m):
        self.line(depth, f"message {m.name} {{")
        maps = {
            name + "." + n.name: n for n in m.nested_type if n.options.map_entry
        }
        for n in m.nested_type:
            if not n.options.map_entry:
                self.message(depth + 1, name + "." + n.name, n)
        for e in m.enum_type:
            self.enum(depth + 1, e)
        written_oneofs = set()
        for f in m.field:
            if f.HasField("oneof_index") and not f.proto3_optional:
                index = f.oneof_index
                if index in written_oneofs:
                    continue
                written_oneofs.add(index)
                self.line(depth + 1, f"oneof {m.oneof_decl[index].name} {{")
                for g in m.field:
                    if g.HasField("oneof_index") and g.oneof_index == index and not g.proto3_optional:
                        self.field(depth + 2, g, maps, True)
                self.line(depth + 1, "}")
            else:
                self.field(depth + 1, f, maps, False)
        self.line(depth, "}")


def defined(dep, index):
    """Full names of the types a dependency of a file defines: ours from the
    wheel, Google's well-known types from the protobuf package's own pool."""
    if dep.startswith("modal_proto/"):
        package = "modal.client" if dep == "modal_proto/api.proto" else None
        return {n for n in index.types if package and n.startswith("." + package + ".")}
    module = importlib.import_module(dep.removesuffix(".proto").replace("/", ".") + "_pb2")
    found = module.DESCRIPTOR
    names = {"." + m.full_name for m in found.message_types_by_name.values()}
    names |= {"." + e.full_name for e in found.enum_types_by_name.values()}
    return names


def render(f, keep, index, header):
    w = Writer(f.package, index)
    for text in header:
        w.line(0, "// " + text if text else "//")
    w.line(0, "")
    w.line(0, 'syntax = "proto3";')
    w.line(0, "")
    w.line(0, f"package {f.package};")
    w.line(0, "")
    prefix = "." + f.package + "."
    used = set()
    for name in keep:
        if not name.startswith(prefix) or name not in index.types:
            continue
        d = index.types[name]
        if isinstance(d, descriptor_pb2.DescriptorProto):
            used |= {g.type_name for g in d.field if g.type_name}
    for service in f.service:
        for m in service.method:
            if m.name in KEEP.get(f.package + "." + service.name, []):
                used |= {m.input_type, m.output_type}
    imports = [dep for dep in f.dependency if used & defined(dep, index)]
    for dep in imports:
        w.line(0, f'import "{dep}";')
    if imports:
        w.line(0, "")
    for e in f.enum_type:
        if prefix + e.name in keep:
            w.enum(0, e)
            w.line(0, "")
    for m in f.message_type:
        if prefix + m.name in keep:
            w.message(0, prefix + m.name, m)
            w.line(0, "")
    for service in f.service:
        wanted = KEEP.get(f.package + "." + service.name, [])
        methods = [m for m in service.method if m.name in wanted]
        if not methods:
            continue
        w.line(0, f"service {service.name} {{")
        for m in methods:
            arg = ("stream " if m.client_streaming else "") + w.type_name(m.input_type)
            out = ("stream " if m.server_streaming else "") + w.type_name(m.output_type)
            w.line(1, f"rpc {m.name}({arg}) returns ({out});")
        w.line(0, "}")
    return "\n".join(w.lines).rstrip() + "\n"


def main():
    if len(sys.argv) != 3:
        raise SystemExit("usage: modal-proto.py WHEEL OUT_DIR")
    wheel, out_dir = sys.argv[1], sys.argv[2]
    with open(wheel, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    files = []
    with zipfile.ZipFile(wheel) as z:
        for path in FILES:
            source = z.read(path).decode("utf-8")
            files.append(descriptor_pb2.FileDescriptorProto.FromString(serialized_descriptor(source)))
    index = Index(files)
    keep = reachable(files, index)
    name = wheel.rsplit("/", 1)[-1]
    for f in files:
        header = [
            f"{f.name}: the part of Modal's API that agentform speaks.",
            f"Generated by scripts/modal-proto.sh from the serialized descriptor in {name}",
            f"(sha256 {digest}); do not edit.",
            "Kept: the methods listed in scripts/modal-proto.py and every type they reach, each",
            "message whole (field numbers, types and labels as in the wheel); comments and",
            "reserved ranges are not carried over.",
        ]
        text = render(f, keep, index, header)
        path = f"{out_dir}/{f.name}"
        with open(path, "w") as out:
            out.write(text)
        print(f"wrote {path}: {text.count(chr(10))} lines", file=sys.stderr)


if __name__ == "__main__":
    main()
