"""The merchant and shopper flows through a client generated from the served OpenAPI document.

Run by scripts/client-flows.sh, which generates the client (package `stampede_client`) with
openapi-python-client and passes: BASE (the server), ADMIN and USER tokens. Every answer is
parsed by the generated models, so a response that contradicts the document fails here.
"""

import os
import sys
import uuid
from datetime import datetime, timedelta, timezone

from stampede_client import AuthenticatedClient, Client
from stampede_client.api.auth import create_account, login
from stampede_client.api.back_office import add_stock, create_template, get_merchant_template, list_templates
from stampede_client.api.engine import claim, get_public_template, my_coupon, my_coupons
from stampede_client.api.settlement import get_order_coupons, lock, quote, redeem, refund
from stampede_client.models import (
    AccountView,
    AddStockBody,
    ClaimResponse,
    CouponPage,
    CreateAccountBody,
    CreateTemplateBody,
    LockBody,
    LoginBody,
    Problem,
    PublicTemplate,
    Quote,
    QuoteBody,
    Settlement,
    Template,
    TemplatePage,
    TokenResponse,
    UserCoupon,
)

BASE = os.environ["BASE"]


def ok(response, model, status=200):
    """The parsed answer, checked to be `model` with `status`."""
    parsed = response.parsed
    if response.status_code != status or not isinstance(parsed, model):
        sys.exit(
            f"expected {status} {model.__name__}, got {response.status_code}: "
            f"{parsed if isinstance(parsed, Problem) else response.content[:500]!r}"
        )
    return parsed


def authed(token):
    return AuthenticatedClient(base_url=BASE, token=token, raise_on_unexpected_status=True)


def main():
    admin = authed(os.environ["ADMIN"])
    user = authed(os.environ["USER"])

    # Auth: an admin creates a merchant account; the merchant logs in.
    password = "flows-" + uuid.uuid4().hex
    username = "merchant_" + uuid.uuid4().hex[:12]
    ok(
        create_account.sync_detailed(
            client=admin,
            body=CreateAccountBody.from_dict(
                {"username": username, "password": password, "role": "merchant", "shop_id": "7"}
            ),
        ),
        model=AccountView,
        status=201,
    )
    tokens = ok(
        login.sync_detailed(
            client=Client(base_url=BASE),
            body=LoginBody.from_dict({"username": username, "password": password}),
        ),
        TokenResponse,
    )
    merchant = authed(tokens.access_token)

    # Merchant: create a template, find it in the list, read it, add stock.
    now = datetime.now(timezone.utc)
    body = CreateTemplateBody.from_dict(
        {
            "name": "Generated client sale",
            "kind": "fixed",
            "amount_off": 500,
            "stock_total": 100,
            "per_user_limit": 1,
            "claim_start": (now - timedelta(seconds=1)).isoformat(),
            "claim_end": (now + timedelta(hours=2)).isoformat(),
            "validity_hours": 24,
        }
    )
    created = ok(
        create_template.sync_detailed(client=merchant, body=body, idempotency_key=uuid.uuid4().hex),
        Template,
        status=201,
    )
    assert created.kind.value == "fixed" and created.status.value == "active", created
    page = ok(list_templates.sync_detailed(client=merchant), TemplatePage)
    assert any(t.id == created.id for t in page.items), "the new template is listed"
    ok(get_merchant_template.sync_detailed(created.id, client=merchant), Template)
    stocked = ok(
        add_stock.sync_detailed(
            created.id,
            client=merchant,
            body=AddStockBody.from_dict({"add": 50}),
            idempotency_key=uuid.uuid4().hex,
        ),
        Template,
    )
    assert stocked.stock_total == 150, stocked

    # Shopper: read the public view, claim (and replay the claim), list "my coupons".
    view = ok(get_public_template.sync_detailed(created.id, client=user), PublicTemplate)
    assert view.remaining_stock == 150, view
    key = uuid.uuid4().hex
    claimed = ok(claim.sync_detailed(created.id, client=user, idempotency_key=key), ClaimResponse, 201)
    again = ok(claim.sync_detailed(created.id, client=user, idempotency_key=key), ClaimResponse)
    assert again.coupon.id == claimed.coupon.id, "a replay answers the same coupon"
    mine = ok(my_coupons.sync_detailed(client=user), CouponPage)
    assert any(c.id == claimed.coupon.id for c in mine.items), "the coupon is mine"
    ok(my_coupon.sync_detailed(claimed.coupon.id, client=user), UserCoupon)

    # Checkout: quote, lock, redeem, refund, read the order.
    cart = [{"goods_id": "1001", "shop_id": "7", "unit_price": 3000, "quantity": 1}]
    q = ok(quote.sync_detailed(client=user, body=QuoteBody.from_dict({"items": cart})), Quote)
    assert any(a.coupon_id == claimed.coupon.id for a in q.available), q
    order = "gen-" + uuid.uuid4().hex[:16]
    locked = ok(
        lock.sync_detailed(
            order,
            client=user,
            body=LockBody.from_dict(
                {"coupon_ids": [claimed.coupon.id], "items": cart, "expected_discount": 500}
            ),
        ),
        Settlement,
    )
    assert locked.status.value == "locked" and locked.discount == 500, locked
    # The optional bodies are sent as JSON null (the generator cannot send "no body"; the
    # server accepts null where the body is optional).
    assert ok(redeem.sync_detailed(order, client=user, body=None), Settlement).status.value == "redeemed"
    assert ok(refund.sync_detailed(order, client=user, body=None), Settlement).status.value == "refunded"
    ok(get_order_coupons.sync_detailed(order, client=user), Settlement)
    print("generated client: merchant and shopper flows passed")


if __name__ == "__main__":
    main()
