"""Run a protoc plugin on only the input files under one path prefix, for buf.

Usage in buf.gen.yaml: `local: [python3, tools/protoc_gen_only.py, shop/, PLUGIN, ARGS...]`.

buf's inputs are shared by every plugin, but not every language should generate every
input file: Go takes `buf/validate` from protovalidate-go's module, and a second
generated copy would register `buf/validate/validate.proto` twice (a panic at start).
The other files stay in the request as dependencies, so imports still resolve.
"""

from __future__ import annotations

import subprocess
import sys

from google.protobuf.compiler import plugin_pb2


def main() -> int:
    prefix, *plugin = sys.argv[1:]
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    wanted = [name for name in request.file_to_generate if name.startswith(prefix)]
    if not wanted:
        # buf calls plugins once per directory: nothing of ours here, nothing to write.
        response = plugin_pb2.CodeGeneratorResponse(
            supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
        )
        sys.stdout.buffer.write(response.SerializeToString())
        return 0
    del request.file_to_generate[:]
    request.file_to_generate.extend(wanted)
    # The plugin's response and errors pass through untouched.
    return subprocess.run(plugin, input=request.SerializeToString(), check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
