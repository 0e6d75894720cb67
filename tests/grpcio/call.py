"""Unary gRPC calls with Python grpcio (gRPC core) on a unix socket, as a user's tool makes them.

usage: call.py SOCKET ROUNDS AUTHORITY METHOD...

Every METHOD (a full path, /package.Service/Method) is called ROUNDS times, in turn, on one
channel, with an empty request message and AUTHORITY as :authority ("-": grpcio's default,
which is "localhost" for a unix: target since gRPC core 1.4x; older gRPC core, grpc-java,
and kubelet before 1.26 send the socket path). gRPC core's HPACK encoder keeps :authority in
its dynamic table across the calls of the channel. Requests and
responses are raw bytes (no generated code, no protoc): the caller decodes them. Prints one
JSON list: {"method", "response": hex} or {"method", "code", "details"} per call.
"""

import json
import sys

import grpc


def main():
    socket, rounds, authority = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    methods = sys.argv[4:]
    options = [] if authority == "-" else [("grpc.default_authority", authority)]
    results = []
    with grpc.insecure_channel("unix:" + socket, options=options) as channel:
        for _ in range(rounds):
            for method in methods:
                call = channel.unary_unary(
                    method, request_serializer=None, response_deserializer=None
                )
                try:
                    response = call(b"", timeout=10)
                    results.append({"method": method, "response": response.hex()})
                except grpc.RpcError as error:
                    results.append(
                        {
                            "method": method,
                            "code": error.code().name,
                            "details": error.details(),
                        }
                    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
