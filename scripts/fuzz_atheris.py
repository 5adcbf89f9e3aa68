"""Coverage-guided fuzzing of the gateway's decision path with atheris (libFuzzer).

Optional and not part of the test suite (``pip install -e '.[fuzz]'``). Feeds
arbitrary bytes, as a request body and an ``authorization`` value, through the
engine exactly as the proxy does (credential, decode, validation, every local
check), plus the parsers on their own; anything but a decision is a finding.

    python scripts/fuzz_atheris.py -max_total_time=60
    python scripts/fuzz_atheris.py -runs=200000 corpus/   # keep a corpus between runs

The hypothesis suites in tests/fuzz/ cover the same ground against running
servers; this finds inputs that reach deeper branches.
"""

from __future__ import annotations

import asyncio
import pathlib
import sys

import atheris

with atheris.instrument_imports():
    from gateway.admin_auth import subject_values
    from gateway.apikeys import ApiKey, api_key_fields, digest_of, new_key
    from gateway.auth import ApiKeyAuth, bearer_token
    from gateway.decimals import DecimalFormatError, parse_decimal
    from gateway.engine import ORDER_METHODS, PreTradeEngine
    from gateway.model import Channel, FlagKind
    from gateway.policy import load_policy
    from gateway.reasons import STATUS_BY_REASON, Denial
    from gateway.snapshot import Snapshot

ROOT = pathlib.Path(__file__).resolve().parent.parent
METHODS = sorted(ORDER_METHODS.values(), key=lambda m: m.name)


def _engine() -> tuple[PreTradeEngine, str]:
    policy = load_policy(ROOT / "limits")
    snapshot = Snapshot(policy.symbols, policy.products)
    key_id, api_key = new_key()
    key = ApiKey(key_id, digest_of(api_key.split(".")[1]), frozenset({"alice"}), Channel.PROGRAM)
    fields = {**api_key_fields(key, "fuzz", "fuzz"), "version": "1"}
    snapshot.apply(FlagKind.API_KEY, key_id, fields, 1)
    return PreTradeEngine(snapshot, auth=ApiKeyAuth(snapshot)), api_key


ENGINE, API_KEY = _engine()
LOOP = asyncio.new_event_loop()


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    method = METHODS[fdp.ConsumeIntInRange(0, len(METHODS) - 1)]
    mode = fdp.ConsumeIntInRange(0, 2)
    if mode == 0:
        credential = f"Bearer {API_KEY}"
    elif mode == 1:
        credential = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 200))
    else:
        credential = "Bearer " + API_KEY[: fdp.ConsumeIntInRange(0, len(API_KEY))]
    text = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 80))
    raw = fdp.ConsumeBytes(fdp.remaining_bytes())

    verdict = LOOP.run_until_complete(
        ENGINE.screen_bytes(method, raw, (("authorization", credential),))
    )
    if verdict is not None:
        assert isinstance(verdict, Denial)
        assert verdict.reason in STATUS_BY_REASON
        assert len(verdict.message) < 4096

    token = bearer_token((("authorization", credential),))
    assert isinstance(token, str | Denial)
    try:
        value = parse_decimal(text)
    except DecimalFormatError:
        pass
    else:
        assert value.is_finite()
        assert value >= 0
        assert value.as_tuple().exponent >= -18  # type: ignore[operator]
    subject_values(text, "OU")


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
