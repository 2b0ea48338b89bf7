"""A real gRPC server and client (grpcio, raw bytes: no generated code) for strait's tests.

    grpc_peer.py server --listen 127.0.0.1:PORT --name pod-a
        serves /test.Echo/{Unary,ServerStream,ClientStream,Bidi,Fail,Slow,SlowStream} in plain
        text (h2c)
        and prints "listening" once it accepts; exits on SIGTERM after a graceful stop of
        --grace seconds (in-flight calls finish).
    grpc_peer.py client --target HOST:PORT --authority NAME
        makes one call of each kind and prints one JSON object with what it saw.
    grpc_peer.py call --target HOST:PORT --authority NAME --method /test.Echo/Slow --payload 2
        makes one unary call and prints {"ok": bool, "response"|"code", "details"}.
    grpc_peer.py stream --target HOST:PORT --authority NAME --method M --payload P
        makes one server-streaming call: {"ok": bool, "responses": [...], "code"...}.
    grpc_peer.py load --target HOST:PORT --authority NAME --seconds S --channels C
        makes unary and server-streaming calls back to back from C long-lived channels
        (each multiplexing 4 calls at once) for S seconds, then prints
        {"ok": n, "failed": n, "errors": [...], "servers": {...}}; SIGUSR1 ends it early.
"""

import argparse
import json
import signal
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "test.Echo"


def handlers(name):
    def unary(request, context):
        context.set_trailing_metadata((("x-served-by", name),))
        return name.encode() + b":" + request

    def server_stream(request, context):
        count = int(request or b"3")
        for i in range(count):
            yield f"{name}:{i}".encode()
        context.set_trailing_metadata((("x-count", str(count)),))

    def client_stream(request_iterator, context):
        parts = [r for r in request_iterator]
        return name.encode() + b":" + b"|".join(parts)

    def bidi(request_iterator, context):
        for r in request_iterator:
            yield name.encode() + b":" + r

    def fail(request, context):
        context.set_trailing_metadata((("x-why", "asked"),))
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "failing as asked")

    def slow_stream(request, context):
        count, gap = (request or b"3,0.1").decode().split(",")
        for i in range(int(count)):
            if i:
                time.sleep(float(gap))
            yield f"{name}:{i}".encode()

    def slow(request, context):
        time.sleep(float(request or b"1"))
        return name.encode()

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
            "Slow": grpc.unary_unary_rpc_method_handler(slow),
            "SlowStream": grpc.unary_stream_rpc_method_handler(slow_stream),
        },
    )


def serve(args):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    server.add_generic_rpc_handlers((handlers(args.name),))
    server.add_insecure_port(args.listen)
    server.start()
    done = threading.Event()

    def stop(*_):
        server.stop(args.grace).wait()
        done.set()

    signal.signal(signal.SIGTERM, stop)
    print("listening", flush=True)
    done.wait()


def channel(args):
    options = [("grpc.default_authority", args.authority)] if args.authority else []
    return grpc.insecure_channel(args.target, options=options)


def describe(e):
    return {"code": e.code().name, "details": e.details(),
            "trailers": dict(e.trailing_metadata() or ())}


def client(args):
    out = {}
    with channel(args) as ch:
        unary = ch.unary_unary(f"/{SERVICE}/Unary")
        resp, call = unary.with_call(b"hello", timeout=10)
        out["unary"] = {"response": resp.decode(), "trailers": dict(call.trailing_metadata())}
        stream = ch.unary_stream(f"/{SERVICE}/ServerStream")
        it = stream(b"5", timeout=10)
        out["server_stream"] = {"responses": [r.decode() for r in it],
                                "trailers": dict(it.trailing_metadata())}
        cs = ch.stream_unary(f"/{SERVICE}/ClientStream")
        out["client_stream"] = cs(iter([b"a", b"b", b"c"]), timeout=10).decode()
        bidi = ch.stream_stream(f"/{SERVICE}/Bidi")
        out["bidi"] = [r.decode() for r in bidi(iter([b"x", b"y"]), timeout=10)]
        try:
            ch.unary_unary(f"/{SERVICE}/Fail")(b"", timeout=10)
            out["fail"] = None
        except grpc.RpcError as e:
            out["fail"] = describe(e)
        for method, key in ((f"/{SERVICE}/Slow", "slow"), ("/no.Such/Method", "unknown")):
            try:
                ch.unary_unary(method)(args.slow.encode(), timeout=10)
                out[key] = None
            except grpc.RpcError as e:
                out[key] = describe(e)
    print(json.dumps(out))


def stream(args):
    got = []
    with channel(args) as ch:
        try:
            for r in ch.unary_stream(args.method)(args.payload.encode(), timeout=args.timeout):
                got.append(r.decode())
            out = {"ok": True, "responses": got}
        except grpc.RpcError as e:
            out = {"ok": False, "responses": got, **describe(e)}
    print(json.dumps(out), flush=True)


def call(args):
    with channel(args) as ch:
        try:
            r = ch.unary_unary(args.method)(args.payload.encode(), timeout=args.timeout)
            out = {"ok": True, "response": r.decode()}
        except grpc.RpcError as e:
            out = {"ok": False, **describe(e)}
    print(json.dumps(out), flush=True)


def load(args):
    stats = {"ok": 0, "failed": 0, "errors": [], "servers": {}}
    lock = threading.Lock()
    deadline = time.time() + args.seconds
    stop = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: stop.set())

    def worker(ch):
        unary = ch.unary_unary(f"/{SERVICE}/Unary")
        stream = ch.unary_stream(f"/{SERVICE}/ServerStream")
        n = 0
        while time.time() < deadline and not stop.is_set():
            n += 1
            try:
                if n % 2:
                    r = unary(b"x", timeout=10).decode()
                else:
                    r = [x.decode() for x in stream(b"3", timeout=10)][-1]
                server = r.split(":")[0]
                with lock:
                    stats["ok"] += 1
                    stats["servers"][server] = stats["servers"].get(server, 0) + 1
            except grpc.RpcError as e:
                with lock:
                    stats["failed"] += 1
                    if len(stats["errors"]) < 10:
                        stats["errors"].append(describe(e))

    channels = [channel(args) for _ in range(args.channels)]
    threads = [threading.Thread(target=worker, args=(ch,)) for ch in channels for _ in range(4)]
    for t in threads:
        t.start()
    print("started", flush=True)
    for t in threads:
        t.join()
    for ch in channels:
        ch.close()
    print(json.dumps(stats), flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--listen", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--grace", type=float, default=5.0)
    for name in ("client", "load", "call", "stream"):
        c = sub.add_parser(name)
        c.add_argument("--method", default=f"/{SERVICE}/Unary")
        c.add_argument("--payload", default="")
        c.add_argument("--timeout", type=float, default=10.0)
        c.add_argument("--target", required=True)
        c.add_argument("--authority", default="")
        c.add_argument("--slow", default="0")
        c.add_argument("--seconds", type=float, default=3.0)
        c.add_argument("--channels", type=int, default=2)
    args = p.parse_args()
    {"server": serve, "client": client, "load": load, "call": call, "stream": stream}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
