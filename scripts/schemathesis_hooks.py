"""Schemathesis hooks for the Stampede API contract run (scripts/schemathesis.sh).

JSON Schema states each field's own rules, and the served document carries them all. What it
cannot state are the rules between fields, against the clock, or about data only the server
issues. The API documents each one in prose; these hooks teach them to the generator, so every
request it calls "valid" really is, and the server must accept it (any 422 left is a failure):

  * a list cursor is one the API returned (links feed real ones; generated ones are dropped);
  * `claim_to` is after `claim_from`; `page x page_size` is at most 1,000,000;
  * a merchant account names its shop, other roles name none;
  * a template's fields match its kind, its validity mode and its scope; its claim window
    ends in the future, after it starts; `valid_until` is after `valid_from` and
    `claim_start`; an admin names the shop of a shop template and none for a platform one;
  * a distribution's `send_at` is ahead, at most 30 days;
  * a cart line's `unit_price x quantity`, and the cart's subtotal, are at most
    1,000,000,000,000;
  * a template's stock, with what is added later, stays within 20,000,000;
  * the `service` role names the user it acts for (`user_id`);
  * `settlement_reserved` is below `max_in_flight`.

A hook only mends fields that are well-formed on their own, and the coverage phase's negative
cases are left as generated, so a case meant to break the schema still does.

STAMPEDE_ROLE names the role of the run's token (`user`, `service`, `merchant`, `admin`), or
`per-operation`: each operation then gets the token of the role it is for (STAMPEDE_TOKEN_<ROLE>),
so the stateful phase can chain a merchant's template into a shopper's claim and order.
"""

import os
import re
import uuid
from collections.abc import MutableMapping
from datetime import datetime, timedelta, timezone

import schemathesis
from schemathesis.core import NOT_SET
from schemathesis.generation import GenerationMode

ROLE = os.environ.get("STAMPEDE_ROLE", "user")
CHAINING = ROLE == "per-operation"
MAX_MONEY = 1_000_000_000_000
MAX_DEPTH = 1_000_000
MAX_STOCK = 20_000_000
MAX_ADD = 10_000
MERCHANT_SHOP = os.environ.get("STAMPEDE_MERCHANT_SHOP", "7")
SERVICE_USER = os.environ.get("STAMPEDE_SERVICE_USER", "42")
CURSOR_OPERATIONS = {"my_coupons", "shop_templates", "goods_templates", "claimable"}
ACTS_FOR_A_USER = {"quote", "lock", "redeem", "release", "refund"}
ID = re.compile(r"^[1-9][0-9]{0,18}$")
I64_MAX = 2**63 - 1


def is_id(s):
    """A positive 64-bit id as the schema allows it (the pattern spells out 1..2^63-1)."""
    return isinstance(s, str) and bool(ID.match(s)) and int(s) <= I64_MAX


KEY = re.compile(r"^[!-~]{1,255}$")


def is_int(v):
    # JSON Schema's integer: `4070.0` is the integer 4070, and the server reads it so.
    if isinstance(v, float):
        return v.is_integer()
    return isinstance(v, int) and not isinstance(v, bool)


def in_range(v, lo, hi):
    """A well-formed integer the schema allows (mending one outside would hide a negative case)."""
    return is_int(v) and lo <= v <= hi


def as_int(v):
    """A query value as an integer, or None."""
    if is_int(v):
        return int(v)
    if isinstance(v, str) and v.isdigit():
        return int(v)
    return None


RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def parse_time(v):
    """The time a well-formed RFC 3339 string names, or None (Python reads more forms than
    the schema's `date-time` allows; those are left alone, as negative cases)."""
    if not isinstance(v, str) or not RFC3339.match(v):
        return None
    try:
        t = datetime.fromisoformat(v.replace("z", "Z").replace("t", "T"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else None


def fmt(t):
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def later(t, delta):
    """`t + delta`, or None past year 9999."""
    try:
        return t + delta
    except OverflowError:
        return None


def absent(body, key):
    return body.get(key) is None


def drop_if_well_formed(body, key, ok):
    if key in body and (body[key] is None or ok(body[key])):
        del body[key]


def role_of(operation_id):
    if ROLE != "per-operation":
        return ROLE
    return OPERATION_ROLES.get(operation_id, "user")


# The role each operation is for, when the run gives every operation its own token.
OPERATION_ROLES = {
    "create_account": "admin",
    "get_flow_rules": "admin",
    "put_flow_rules": "admin",
    "create_template": "merchant",
    "list_templates": "merchant",
    "get_merchant_template": "merchant",
    "add_stock": "merchant",
    "terminate": "merchant",
    "audit": "merchant",
    "upload_distribution": "merchant",
    "list_distributions": "merchant",
    "get_distribution": "merchant",
    "cancel_distribution": "merchant",
    "distribution_failures": "merchant",
}


def mend_query(op, query):
    if not isinstance(query, dict):
        return query
    if op in CURSOR_OPERATIONS:
        query.pop("cursor", None)
    start, end = parse_time(query.get("claim_from")), parse_time(query.get("claim_to"))
    if start and end and end <= start:
        moved = later(start, timedelta(hours=1))
        if moved:
            query["claim_to"] = fmt(moved)
        else:
            query.pop("claim_to")
    page, size = as_int(query.get("page")), as_int(query.get("page_size", 20))
    if page is not None and page >= 1 and size and 1 <= size <= 100 and page * size > MAX_DEPTH:
        query["page"] = max(1, MAX_DEPTH // size)
    return query


def mend_account(body):
    role = body.get("role")
    shop = body.get("shop_id")
    if role == "merchant" and shop is None:
        body["shop_id"] = MERCHANT_SHOP
    elif role in ("user", "service", "admin"):
        drop_if_well_formed(body, "shop_id", is_id)


def mend_template(body, role):
    kind = body.get("kind")
    if kind not in ("fixed", "threshold", "percent"):
        return
    # Only values the schema allows are dropped: dropping an out-of-range one would turn a
    # negative case into a valid request.
    def percent(v):
        return in_range(v, 1, 99)

    def positive_money(v):
        return in_range(v, 1, MAX_MONEY)

    def money(v):
        return in_range(v, 0, MAX_MONEY)

    if kind in ("fixed", "threshold"):
        if absent(body, "amount_off"):
            body["amount_off"] = 1000
        drop_if_well_formed(body, "percent_off", percent)
        drop_if_well_formed(body, "max_off", positive_money)
    if kind == "fixed":
        drop_if_well_formed(body, "threshold", money)
    if kind == "threshold":
        amount, threshold = body.get("amount_off"), body.get("threshold")
        if in_range(amount, 1, MAX_MONEY) and (threshold is None or (in_range(threshold, 0, MAX_MONEY) and threshold <= amount)):
            if amount >= MAX_MONEY:
                body["amount_off"] = amount = MAX_MONEY - 1
            body["threshold"] = int(amount) + 1
    # Stock added later keeps the total within 20,000,000 (see mend_body, add_stock).
    if in_range(body.get("stock_total"), 1, MAX_STOCK) and body["stock_total"] > MAX_STOCK // 2:
        body["stock_total"] = MAX_STOCK // 2
    if kind == "percent":
        if absent(body, "percent_off"):
            body["percent_off"] = 10
        drop_if_well_formed(body, "amount_off", positive_money)

    # The claim window ends in the future, after it starts.
    now = datetime.now(timezone.utc)
    start, end = parse_time(body.get("claim_start")), parse_time(body.get("claim_end"))
    if CHAINING and start and start > now:
        # Chained runs claim what they create: the sale has started.
        start = now - timedelta(minutes=1)
        body["claim_start"] = fmt(start)
    if start and end:
        floor = max(start, now)
        if end <= floor + timedelta(minutes=1):
            moved = later(floor, timedelta(days=30))
            if moved is None:
                start = now
                body["claim_start"] = fmt(start)
                moved = now + timedelta(days=30)
            body["claim_end"] = fmt(moved)

    # Validity is relative (validity_hours, optional valid_until cap) or absolute
    # (valid_from and valid_until), and never ends before the claim window opens.
    hours, vfrom, vuntil = body.get("validity_hours"), body.get("valid_from"), body.get("valid_until")
    if is_int(hours):
        drop_if_well_formed(body, "valid_from", lambda v: parse_time(v) is not None)
    elif hours is None and (vfrom is not None or vuntil is not None):
        body.pop("validity_hours", None)
        if vfrom is None and parse_time(vuntil):
            body["valid_from"] = fmt(now)
        if vuntil is None and parse_time(vfrom):
            moved = later(parse_time(vfrom), timedelta(days=30))
            body["valid_until"] = fmt(moved) if moved else "9999-12-31T00:00:00Z"
    elif hours is None:
        body["validity_hours"] = 24
    until = parse_time(body.get("valid_until"))
    if until:
        after = [t for t in (parse_time(body.get("valid_from")), start) if t]
        if after and until <= max(after):
            moved = later(max(after), timedelta(days=30))
            if moved:
                body["valid_until"] = fmt(moved)
            else:
                body.pop("valid_until")
                if "valid_from" in body:
                    body.pop("valid_from")
                    body["validity_hours"] = 24

    if CHAINING:
        # Chained runs spend what they claim: a coupon usable now, on any goods of the shop,
        # for a cart of 1,000,000,000 minor units (the Lock link's cart).
        body["scope"] = "shop"
        body.pop("goods_ids", None)
        for key in ("valid_from", "valid_until"):
            body.pop(key, None)
        if not in_range(body.get("validity_hours"), 1, 8760):
            body["validity_hours"] = 24
        if kind == "threshold" and in_range(body.get("threshold"), 2, MAX_MONEY):
            body["threshold"] = min(body["threshold"], 1_000_000_000)
            body["amount_off"] = min(body["amount_off"], body["threshold"] - 1)

    # Goods ids belong to a goods-scoped template, once each.
    scope, goods = body.get("scope"), body.get("goods_ids")
    if isinstance(goods, list) and len(goods) <= 100 and all(is_id(g) for g in goods):
        if scope == "goods":
            body["goods_ids"] = list(dict.fromkeys(goods)) or ["1001"]
        elif scope in (None, "shop"):
            body["goods_ids"] = []
    elif goods is None and scope == "goods":
        body["goods_ids"] = ["1001"]

    # Admins name the shop of a shop template (not `0`, the platform) and none for a platform
    # one.
    if role == "admin":
        if body.get("source") == "platform":
            drop_if_well_formed(body, "shop_id", lambda s: s == "0" or is_id(s))
        elif absent(body, "shop_id") or body.get("shop_id") == "0":
            body["shop_id"] = MERCHANT_SHOP


def mend_cart(body):
    items = body.get("items")
    if not isinstance(items, list) or not items:
        return
    # Each line, and the whole cart, stays within 1,000,000,000,000: give every line an even
    # share of that budget.
    budget = MAX_MONEY // len(items)
    for line in items:
        if isinstance(line, dict):
            price, qty = line.get("unit_price"), line.get("quantity")
            if in_range(price, 0, MAX_MONEY) and in_range(qty, 1, 10_000) and price * qty > budget:
                if price > budget:
                    line["unit_price"] = price = budget
                line["quantity"] = max(1, budget // max(1, int(price)))


def mend_body(op, body, role):
    if op in ACTS_FOR_A_USER and role == "service":
        if body is None:
            body = {}
        if isinstance(body, dict) and absent(body, "user_id"):
            body["user_id"] = SERVICE_USER
    if not isinstance(body, dict):
        return body
    if CHAINING and op in ("redeem", "release", "refund"):
        # Chained runs act on their own order (another user's reads as 404), refunding all.
        body["user_id"] = SERVICE_USER
        body.pop("coupon_ids", None)
    if op == "create_account":
        mend_account(body)
    elif op == "create_template":
        mend_template(body, role)
    elif op in ("quote", "lock", "claimable"):
        mend_cart(body)
        if CHAINING and op == "lock":
            # Chained runs lock what they claimed: as its owner, at the discount the server
            # computes (another user's id is 403, a stale discount 409: both tested elsewhere).
            # The link's coupon and cart line come first; extras drawn around them only make
            # the lock refuse.
            body["user_id"] = SERVICE_USER
            body.pop("expected_discount", None)
            for key in ("coupon_ids", "items"):
                if isinstance(body.get(key), list):
                    body[key] = body[key][:1]
    elif op == "add_stock":
        # Many adds land on one template: each stays small enough for all to fit.
        if in_range(body.get("add"), 1, MAX_STOCK) and body["add"] > MAX_ADD:
            body["add"] = MAX_ADD
    elif op == "upload_distribution":
        if parse_time(body.get("send_at")):
            body["send_at"] = fmt(datetime.now(timezone.utc) + timedelta(hours=1))
    elif op == "put_flow_rules":
        c = body.get("concurrency")
        if isinstance(c, dict) and in_range(c.get("max_in_flight"), 1, 100_000) and in_range(c.get("settlement_reserved"), 0, 99_999):
            if c["settlement_reserved"] >= c["max_in_flight"] >= 1:
                c["settlement_reserved"] = c["max_in_flight"] - 1
    return body


def mend_headers(headers):
    # An Idempotency-Key names one request: a generator that repeats `!` for two different
    # bodies is reusing a key, which the API refuses by design (422 IDEMPOTENCY_KEY_REUSED).
    if isinstance(headers, MutableMapping) and KEY.match(str(headers.get("Idempotency-Key", ""))):
        headers["Idempotency-Key"] = uuid.uuid4().hex
    return headers


def operation_id(context):
    op = context.operation
    return op.definition.raw.get("operationId") if op is not None else None


def mend_case(context, case):
    op = operation_id(context)
    role = role_of(op)
    if case.query is not None:
        case.query = mend_query(op, case.query)
    if isinstance(case.body, dict):
        case.body = mend_body(op, case.body, role)
    elif op in ACTS_FOR_A_USER and role == "service" and (case.body is None or case.body is NOT_SET):
        # The optional body is where the service names its user.
        case.body = mend_body(op, None, role)
        case.media_type = "application/json"
    case.headers = mend_headers(case.headers)
    return case


@schemathesis.hook
def map_case(context, case):
    # The coverage phase: its negative cases stay broken on purpose.
    meta = case.meta
    if meta is not None and meta.generation.mode == GenerationMode.NEGATIVE:
        return case
    return mend_case(context, case)


@schemathesis.hook
def before_add_examples(context, examples):
    # The examples phase: the document's examples are valid as they stand, but a property's
    # example combined with others may not be, and each request needs its own key.
    for case in examples:
        mend_case(context, case)


@schemathesis.hook
def map_path_parameters(context, params):
    # Chained runs lock each claim under an order id of its own (a drawn id is often `0`
    # again, and an order id holding other coupons is 409 by design).
    if CHAINING and operation_id(context) == "lock" and isinstance(params, dict):
        params["order_id"] = "o-" + uuid.uuid4().hex
    return params


@schemathesis.hook
def map_headers(context, headers):
    return mend_headers(headers)


@schemathesis.hook
def map_query(context, query):
    return mend_query(operation_id(context), query)


@schemathesis.hook
def map_body(context, body):
    op = operation_id(context)
    return mend_body(op, body, role_of(op))


if ROLE == "per-operation":

    # No caching: the token depends on the operation, not on time.
    @schemathesis.auth(refresh_interval=None, retry_on=[])
    class PerOperationToken:
        """Each operation gets the token of the role it is for."""

        def get(self, case, context):
            return role_of(case.operation.definition.raw.get("operationId"))

        def set(self, case, role, context):
            token = os.environ.get(f"STAMPEDE_TOKEN_{role.upper()}")
            if token:
                case.headers = case.headers or {}
                case.headers["Authorization"] = f"Bearer {token}"
