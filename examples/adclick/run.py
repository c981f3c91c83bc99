"""Ad clicks billed exactly once: an idempotent producer, a 6-partition topic, a billing group of 3.

    python examples/adclick/run.py              # the bill equals the clicks sent
    python examples/adclick/run.py --no-dedup   # the control: a broker that stores retries again

It needs dedup and confluent-kafka: ``pip install -e '.[test]'`` in a clone installs both.
What happens, in about 10 seconds:

1. ``python -m dedup serve`` starts 3 brokers on free ports with a topic ``clicks`` of 6
   partitions, and loses 15% of its produce responses after storing the batch (the
   connection breaks), so the producer retries batches the broker already has.
2. Three billing consumers (billing.py, separate processes, ``group.id=billing``) join the
   group; each gets 2 partitions.
3. An idempotent producer (confluent-kafka, ``acks=all``) sends the clicks, keyed by user id,
   so they spread over all 6 partitions. Each partition has its own producer-state table:
   a retry is recognised by its producer id and sequence in the partition it went to.
4. Mid-stream one billing consumer is killed (SIGKILL: no goodbye). After its session
   timeout the group rebalances and the other two take its partitions from the offsets it
   committed.
5. When every stored click is billed (the members print what they bill; this script keeps
   the ledger, one entry per partition and offset), the bill per ad is compared with what the
   producer sent. Exit status 0 when they are equal, 1 when they are not (2: the demo could not run).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from story import ADS, say, wait_for

TOPIC = "clicks"
PARTITIONS = 6
GROUP = "billing"
MEMBERS = 3
USERS = 500
HERE = os.path.dirname(os.path.abspath(__file__))


class Serve:
    """``python -m dedup serve`` in its own process, on free ports, in a temporary directory."""

    def __init__(self, directory: str, drop_responses: float, seed: int, no_dedup: bool) -> None:
        command = [sys.executable, "-m", "dedup", "serve", "--port", "0", "--brokers", "3",
                   "--dir", os.path.join(directory, "logs"), "--topic", f"{TOPIC}:{PARTITIONS}",
                   "--drop-responses", str(drop_responses), "--seed", str(seed),
                   # a group forms at once, and a member may ask for a 3 s session timeout
                   "--override", "group.initial.rebalance.delay.ms=0",
                   "--override", "group.min.session.timeout.ms=1000"]  # fmt: skip
        if no_dedup:
            command.append("--no-dedup")
        self.errors = open(os.path.join(directory, "serve.err"), "w+")  # its warnings; closed in stop()
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.errors, text=True)
        line = self.process.stdout.readline()  # bootstrap.servers=HOST:PORT,... once every broker listens
        if not line.startswith("bootstrap.servers="):
            self.stop()
            raise RuntimeError(f"dedup serve did not start: {line}{self.stderr}")
        self.bootstrap = line.strip().split("=", 1)[1]
        self.process.stdout.readline()  # "topics: ..."

    def stop(self) -> str:
        """Stop it (Ctrl-C) and return its summary: what it served and which faults it injected."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            summary, _ = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            summary, _ = self.process.communicate()
        self.errors.seek(0)
        self.stderr = self.errors.read()  # its warnings, if any, for a failure's message
        self.errors.close()
        return summary or ""


class Member:
    """A billing consumer (billing.py) in its own process; a thread reads what it prints."""

    def __init__(self, bootstrap: str, name: str, ledger: list[tuple[str, int, int, str, int]]) -> None:
        self.name = name
        self.assigned: list[int] = []
        self.billed = 0
        self.first: dict[int, int] = {}  # partition -> the first offset this member billed in it
        self.process = subprocess.Popen([sys.executable, os.path.join(HERE, "billing.py"), bootstrap, name],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
        threading.Thread(target=self._read, args=(ledger,), daemon=True).start()

    def _read(self, ledger: list[tuple[str, int, int, str, int]]) -> None:
        for line in self.process.stdout:
            if not line.endswith("\n"):
                break  # killed in the middle of a line: that click was not billed (nor committed)
            event, *fields = line.split()
            if event == "assigned":
                self.assigned = [int(p) for p in fields]
            elif event == "billed":
                partition, offset, ad, cents = fields
                ledger.append((self.name, int(partition), int(offset), ad, int(cents)))
                self.first.setdefault(int(partition), int(offset))
                self.billed += 1

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # billing.py leaves the group and exits
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def clicks(count: int, seed: int) -> list[tuple[str, dict[str, object]]]:
    """``count`` clicks as (key, value): random users clicking random ads, keyed by user id, so
    one user's clicks stay in order in one partition and the users spread over all of them."""
    rng = random.Random(seed)
    made = []
    for number in range(count):
        user, ad = rng.randrange(USERS), rng.choice(list(ADS))
        made.append((f"user-{user}", {"click": number, "user": user, "ad": ad, "cents": ADS[ad]}))
    return made


def produce(bootstrap: str, to_send: list[tuple[str, dict[str, object]]], seconds: float,
            meanwhile: Callable[[], object]) -> list[tuple[int, str, int]]:  # fmt: skip
    """Send the clicks over about ``seconds``, calling ``meanwhile`` between them; the
    acknowledged ones as (partition, ad, cents)."""
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,  # producer id + per-partition sequence numbers: the broker drops retries
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 30000,
        # Each lost response breaks the connection: reconnect and retry at once (librdkafka's backoff
        # otherwise doubles up to 10 s), and do not log every disconnection.
        "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 200, "retry.backoff.ms": 20,
        "log.connection.close": False,
    })  # fmt: skip
    acknowledged: list[tuple[int, str, int]] = []
    failed: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            failed.append(error)
        else:
            click = json.loads(message.value())
            acknowledged.append((message.partition(), click["ad"], click["cents"]))

    begin = time.monotonic()
    for number, (key, value) in enumerate(to_send):
        producer.produce(TOPIC, key=key, value=json.dumps(value), on_delivery=on_delivery)
        producer.poll(0)
        meanwhile()
        ahead = begin + seconds * (number + 1) / len(to_send) - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)  # a steady stream, so the consumers bill while it flows
    deadline = time.monotonic() + 30
    while producer.flush(0.1) and time.monotonic() < deadline:  # wait for the last acknowledgements
        meanwhile()
    if len(producer) or failed:
        raise RuntimeError(f"clicks not acknowledged: {failed[:3]} ({len(producer)} still queued)")
    return acknowledged


def committed_offsets(bootstrap: str, partitions: list[int]) -> dict[int, int]:
    """The group's committed offsets, asked (OffsetFetch) by a client outside the group."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP})
    try:
        found = consumer.committed([TopicPartition(TOPIC, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset for tp in found}
    finally:
        consumer.close()


def stored_offsets(bootstrap: str) -> dict[int, int]:
    """Each partition's high watermark: how many clicks the brokers stored in it."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "adclick-report"})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)[1] for p in range(PARTITIONS)}
    finally:
        consumer.close()


def dollars(cents: int) -> str:
    return f"${cents / 100:,.2f}"


def report(acknowledged: list[tuple[int, str, int]], stored: dict[int, int],
           ledger: list[tuple[str, int, int, str, int]], summary: str) -> bool:  # fmt: skip
    """Print what was sent, stored and billed, per partition and per ad; True if the bill is exact."""
    billed = {(p, o): (ad, cents) for _, p, o, ad, cents in ledger}  # a click read twice is billed once
    sent_in = Counter(p for p, _, _ in acknowledged)
    billed_in = Counter(p for p, _ in billed)
    print(f"\n{'partition':<12}{'sent':>8}{'stored':>8}{'billed':>8}")
    for p in range(PARTITIONS):
        print(f"{f'{TOPIC}-{p}':<12}{sent_in[p]:>8}{stored[p]:>8}{billed_in[p]:>8}")

    sent_clicks, sent_cents = Counter[str](), Counter[str]()
    for _, ad, cents in acknowledged:
        sent_clicks[ad] += 1
        sent_cents[ad] += cents
    billed_clicks, billed_cents = Counter[str](), Counter[str]()
    for ad, cents in billed.values():
        billed_clicks[ad] += 1
        billed_cents[ad] += cents
    print(f"\n{'ad':<14}{'clicks sent':>12}{'billed':>8}{'amount sent':>14}{'billed':>12}")
    for ad in [*ADS, "total"]:
        row = [sent_clicks, billed_clicks, sent_cents, billed_cents]
        sent, bill, paid, charged = (c.total() if ad == "total" else c[ad] for c in row)
        print(f"{ad:<14}{sent:>12}{bill:>8}{dollars(paid):>14}{dollars(charged):>12}")

    lost = re.search(r"faults: (\d+) responses dropped", summary)
    duplicates = re.search(r"(\d+) retries recognised as duplicates", summary)
    if lost and duplicates:
        print(f"\nserve: {lost.group(1)} produce responses lost, so the producer retried; {duplicates.group(1)} "
              f"retried batches recognised as duplicates and not stored again")  # fmt: skip
    print(f"billing: {len(ledger) - len(billed)} click(s) billed but not committed when the kill came, read again "
          f"by the new owner and billed once (the ledger is keyed by partition and offset)")  # fmt: skip
    if (billed_clicks, billed_cents) == (sent_clicks, sent_cents):
        print(f"bill: exact, {sent_clicks.total()} clicks sent, {billed_clicks.total()} billed")
        return True
    print(f"bill: WRONG, {sent_clicks.total()} clicks sent, {billed_clicks.total()} billed: "
          f"{dollars(billed_cents.total() - sent_cents.total())} overbilled")  # fmt: skip
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clicks", type=int, default=3000, help="clicks to send (default 3000)")
    parser.add_argument("--drop-responses", type=float, default=0.15, help="share of produce responses lost")
    parser.add_argument("--seed", type=int, default=7, help="seed of the clicks and of the lost responses")
    parser.add_argument("--no-dedup", action="store_true", help="run serve without deduplication (the control)")
    args = parser.parse_args()
    try:
        return 0 if run(args) else 1
    except (TimeoutError, RuntimeError) as error:
        print(f"adclick: {error}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> bool:
    """The demo; True if the bill equals the clicks sent."""
    with tempfile.TemporaryDirectory(prefix="adclick-") as directory:
        serve = Serve(directory, args.drop_responses, args.seed, args.no_dedup)
        members: list[Member] = []
        ledger: list[tuple[str, int, int, str, int]] = []  # (member, partition, offset, ad, cents) per click billed
        try:
            say(f"dedup serve: 3 brokers at {serve.bootstrap}, topic {TOPIC} with {PARTITIONS} partitions, "
                f"{args.drop_responses:.0%} of produce responses lost, deduplication "
                f"{'OFF (the control)' if args.no_dedup else 'on'}")  # fmt: skip

            # The billing group: three processes; wait until each owns 2 partitions.
            members = [Member(serve.bootstrap, f"billing-{n}", ledger) for n in range(1, MEMBERS + 1)]
            wait_for(lambda: sorted(p for m in members for p in m.assigned) == list(range(PARTITIONS))
                     and all(m.assigned for m in members), 20, "the billing group to form")  # fmt: skip
            say("billing group: " + "; ".join(f"{m.name} has partitions {m.assigned}" for m in members))

            victim, survivors = members[0], members[1:]
            committed: dict[int, int] = {}  # the victim's partitions -> their committed offsets when it died
            resumed: set[int] = set()

            def watch() -> bool:
                """Kill the victim once it has billed a sixth of its share, then tell who resumed its
                partitions, and where; True once every one of them has been resumed."""
                if not committed and victim.billed >= args.clicks // (2 * MEMBERS * MEMBERS):
                    victim.kill()
                    committed.update(committed_offsets(serve.bootstrap, victim.assigned))
                    say(f"killed {victim.name} (SIGKILL) after it billed {victim.billed} clicks; committed: "
                        + ", ".join(f"{TOPIC}-{p} at offset {o}" for p, o in committed.items()))  # fmt: skip
                for member in survivors:
                    for partition in committed.keys() & member.first.keys() - resumed:
                        resumed.add(partition)
                        first = member.first[partition]
                        say(
                            f"{member.name} resumed {TOPIC}-{partition} at offset {first}: "
                            f"{'the committed offset' if first == committed[partition] else 'NOT the committed one'}"
                        )
                return bool(committed) and resumed == committed.keys()

            to_send = clicks(args.clicks, args.seed)
            say(f"producing {len(to_send)} clicks on {len(ADS)} ads from {USERS} users, keyed by user id")
            acknowledged = produce(serve.bootstrap, to_send, 4.0, watch)
            say(f"producer: all {len(acknowledged)} clicks acknowledged")
            wait_for(watch, 30, "the kill and the takeover")
            say("billing group now: " + "; ".join(f"{m.name} has partitions {m.assigned}" for m in survivors))

            # Everything stored gets billed: wait until the ledger holds every stored offset.
            stored = stored_offsets(serve.bootstrap)
            wait_for(lambda: len({(p, o) for _, p, o, _, _ in ledger}) >= sum(stored.values()), 30,
                     "the survivors to bill every stored click")  # fmt: skip
        finally:
            for member in members:
                member.stop()
            summary = serve.stop()
    return report(acknowledged, stored, ledger, summary)


if __name__ == "__main__":
    sys.exit(main())
