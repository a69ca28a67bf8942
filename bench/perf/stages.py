#!/usr/bin/env python3
"""Attributes `perf script` samples of a gateway to the stages of a
webhook's path, by thread and call stack, and prints each stage's share.

    perf script -i deliver.perf.data | bench/perf/stages.py [CPU µs per webhook]

Given the gateway's CPU per delivered webhook (the bench prints it), it also
prints µs per webhook per stage (share × total). The rules are the first
match, in order, of a keyword anywhere in a sample's stack: the stage names
are those of docs/performance.md.
"""
import sys
from collections import Counter

# (stage, thread prefix or None, keywords): first match wins.
RULES = [
    ("retention", None, ["retention::", "::prune"]),
    ("ingest: apply (writer)", "store-writer", ["redb::ingest::record", "redb::events::Log"]),
    ("attempt recording: apply (writer)", "store-writer",
     ["deliveries::record_attempt", "record_attempts", "note_attempt"]),
    ("fan-out: apply (writer)", "store-writer",
     ["deliveries::create", "plan_deliveries", "add_deliveries"]),
    ("store: commit (writer, shared by stages)", "store-writer",
     ["WriteTransaction::commit", "writer::sync", "durable_commit", "non_durable_commit"]),
    ("store: writer thread, other", "store-writer", [""]),
    ("ingest: batching thread", "ingest-recorde", [""]),
    # Compiled plugin code has no symbols: its frames are perf's JIT map.
    ("fan-out: plugin (sandbox)", None, ["wasmtime", "callisto::plugin::", "cranelift", "/tmp/perf-"]),
    ("fan-out: read, plan, other", None, ["callisto::fanout::"]),
    ("attempt recording: task side", None, ["record_attempt"]),
    ("send: HTTP client (reqwest, hyper)", None,
     ["hyper::client", "hyper_util::client", "reqwest::", "deliver::attempt::send"]),
    ("send: claim (read the due index)", None,
     ["deliveries::due_for", "claim_due", "webhooks_due", "pending_count"]),
    ("send: load delivery and webhook, unseal the secret", None,
     ["deliveries::get", "Reader>::webhook", "seal::Sealer::open", "delivery_to_send"]),
    ("send: sign", None, ["signature::headers"]),
    ("send: scheduler, attempt task, metrics", None, ["callisto::deliver::"]),
    ("ingest: HTTP + parse (hyper server, axum, handler)", None,
     ["api::ingest", "server::listener", "hyper::server", "axum::", "Http1Transaction>::parse",
      "callisto::ingest::", "callisto::api::"]),
    ("runtime: scheduling, wake-ups, idle (tokio)", None, [""]),
]


def samples(lines):
    head, stack = None, []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if head is not None:
                yield head, stack
            head, stack = None, []
        elif not line.startswith((" ", "\t")):
            head = line
        else:
            stack.append(line.strip())
    if head is not None:
        yield head, stack


def classify(thread, stack):
    joined = "\n".join(stack)
    for stage, prefix, keywords in RULES:
        if prefix is not None and not thread.startswith(prefix):
            continue
        if any(k in joined for k in keywords):
            return stage
    return "other"


def main():
    per_webhook = float(sys.argv[1]) if len(sys.argv) > 1 else None
    counts = Counter()
    for head, stack in samples(sys.stdin):
        thread = head.split()[0]
        counts[classify(thread, stack)] += 1
    total = sum(counts.values())
    order = [r[0] for r in RULES] + ["other"]
    print(f"{total} samples")
    for stage in order:
        n = counts.get(stage, 0)
        if not n:
            continue
        share = n / total
        us = f"{share * per_webhook:7.1f} µs" if per_webhook else ""
        print(f"{share * 100:5.1f}%  {us}  {stage}")


if __name__ == "__main__":
    main()
