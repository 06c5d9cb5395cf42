#!/usr/bin/env python3
"""A loopback SMTP server for the mail tests (aiosmtpd).

    smtp_sink.py --dir DIR [--port PORT]

Listens on 127.0.0.1 (port 0: one the system picks), prints the port on a line of its own once
it is listening, and stores every message it accepts as DIR/<n>.eml, exactly as received. While
the file DIR/refuse exists, every message is refused with the reply it holds (a whole SMTP reply
such as "451 4.3.0 Try again later" or "554 5.7.1 No"). Stops on SIGTERM or SIGKILL; started
again with the same --port it takes up the same address (a server that went away and came back).
"""

import argparse
import asyncio
import itertools
import os
import pathlib
import signal
import sys

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, out: pathlib.Path):
        self.out = out
        self.counter = itertools.count(1)

    async def handle_DATA(self, server, session, envelope):
        refuse = self.out / "refuse"
        if refuse.exists():
            return refuse.read_text().strip() or "451 4.3.0 Try again later"
        n = next(self.counter)
        name = f"{os.getpid()}-{n:06}.eml"
        tmp = self.out / f".{name}.tmp"
        tmp.write_bytes(envelope.original_content)
        os.replace(tmp, self.out / name)
        return "250 2.0.0 OK"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    out = pathlib.Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    handler = Sink(out)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(
            lambda: SMTP(handler, hostname="sink.localhost"),
            host="127.0.0.1",
            port=args.port,
            reuse_address=True,
        )
    )
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.run_forever()
    server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
