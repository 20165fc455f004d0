"""Example shop service that the demo and the end-to-end tests run under the distro.

Apart from the support routes near the end, the module contains no telemetry code:
``opentelemetry-instrument`` adds all of it from outside, configured by environment variables. The
support routes call the OpenTelemetry API (a no-op without the distro), as app code that enriches
its spans does. The module defines two ASGI apps:

* ``app``, the shop: ``uvicorn shop_app:app --app-dir examples``
* ``inventory_app``, the stock service that the shop calls over HTTP:
  ``uvicorn shop_app:inventory_app --app-dir examples --port 8001``

Settings, read once at import:

* ``SHOP_DATABASE_URL``: SQLAlchemy URL of the shop database, default ``sqlite:///./shop.db``
  (a file in the current directory).
* ``SHOP_INVENTORY_URL``: base URL of the inventory service, default ``http://127.0.0.1:8001``.
* ``SHOP_SLOW_SECONDS``: how long ``GET /slow`` sleeps before its query, in seconds, default 0.3.
* ``SHOP_SUPPORT_CACHE_URL``: Redis URL of the support desk's ticket cache, e.g.
  ``redis://default:<password>@cache.example.internal:6379/0``. Unset by default, which turns the
  cache spans off. No connection is ever made (see `TicketCache`).
"""

import importlib
import logging
import os
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import unquote, urlsplit

import httpx
from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ForeignKey, String, create_engine, func, make_url, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    database_url: str
    inventory_url: str
    slow_seconds: float
    support_cache_url: str | None = None

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            database_url=os.environ.get("SHOP_DATABASE_URL", "sqlite:///./shop.db"),
            inventory_url=os.environ.get("SHOP_INVENTORY_URL", "http://127.0.0.1:8001").rstrip("/"),
            slow_seconds=float(os.environ.get("SHOP_SLOW_SECONDS", "0.3")),
            support_cache_url=os.environ.get("SHOP_SUPPORT_CACHE_URL") or None,
        )


settings = Settings.from_env()


# --- Database -------------------------------------------------------------------------------


class Base(DeclarativeBase):
    pass


class Product(Base):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(500), default="")
    price: Mapped[float]


class Review(Base):
    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    rating: Mapped[int]
    comment: Mapped[str] = mapped_column(String(500), default="")


class SupportTicket(Base):
    __tablename__ = "support_tickets"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Ticket number in the helpdesk that an imported ticket came from. None for tickets opened here.
    external_ref: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    email: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(500))
    message: Mapped[str] = mapped_column(String(5000), default="")
    order_id: Mapped[int | None] = mapped_column(default=None)
    # Lets the customer open the ticket from the link in the confirmation e-mail, without a login.
    access_token: Mapped[str] = mapped_column(String(64), default=lambda: secrets.token_urlsafe(24))


# (id, name, description, price)
SEED_PRODUCTS = [
    (1, "Espresso beans, 1 kg", "Dark roast from Minas Gerais", 24.5),
    (2, "Pour-over kettle", "Gooseneck, 0.9 l", 49.0),
    (3, "Burr grinder", "40 grind settings", 129.0),
    (4, "Paper filters, 100 pack", "Size 02", 6.75),
]

# (product id, rating, comment)
SEED_REVIEWS = [
    (1, 5, "Rich and smooth."),
    (1, 4, "A bit too dark for filter coffee."),
    (3, 5, "Consistent grind, quiet motor."),
]


engine = create_engine(settings.database_url)


def seed_database() -> None:
    """Insert the sample products and reviews when the products table is empty."""
    with Session(engine) as session:
        if session.scalar(select(func.count()).select_from(Product)):
            return
        session.add_all(
            Product(id=product_id, name=name, description=description, price=price)
            for product_id, name, description, price in SEED_PRODUCTS
        )
        session.flush()
        session.add_all(
            Review(product_id=product_id, rating=rating, comment=comment)
            for product_id, rating, comment in SEED_REVIEWS
        )
        session.commit()
    logger.info("Seeded %d products into %s", len(SEED_PRODUCTS), engine.url)


def set_up_database(max_attempts: int = 3) -> None:
    """Create the tables and seed them, retrying when another process does the same at once.

    Both apps live in this module, so a demo that starts the shop and the inventory service
    together runs this twice against one SQLite file. The process that loses the race fails with
    "table already exists" or a duplicate primary key, and its next attempt finds the tables and
    rows that the other process committed.
    """
    for attempt in range(1, max_attempts + 1):
        try:
            Base.metadata.create_all(engine)
            seed_database()
            return
        except (IntegrityError, OperationalError) as exc:
            if attempt == max_attempts:
                raise
            logger.warning(
                "Database setup attempt %d of %d failed, retrying: %s", attempt, max_attempts, exc.orig
            )
            time.sleep(0.2 * attempt)


set_up_database()

# The async engine is created on first use, so the shop still starts when greenlet or aiosqlite
# is missing. SQLAlchemy 2.1 installs greenlet only with its "asyncio" extra, while 2.0 installed it
# by default on common platforms. Only the route that needs the async engine fails then, with 503.
_async_engine: "AsyncEngine | None" = None


def get_async_engine() -> "AsyncEngine":
    """Return the async engine for the shop database, creating it on the first call.

    Raises HTTPException 503 when the database is not SQLite or an async driver package is missing.
    """
    global _async_engine
    if _async_engine is not None:
        return _async_engine

    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite":
        raise HTTPException(
            status_code=503,
            detail=f"Reviews need the async engine, which this example builds only for SQLite, "
            f"but SHOP_DATABASE_URL uses {url.get_backend_name()!r}.",
        )

    missing = []
    for module_name in ("greenlet", "aiosqlite"):
        try:
            importlib.import_module(module_name)
        except ImportError:
            missing.append(module_name)
    if missing:
        raise HTTPException(
            status_code=503,
            detail=f"Reviews need the async database engine, but these packages are not "
            f"installed: {', '.join(missing)}. Install them with: pip install {' '.join(missing)}",
        )

    from sqlalchemy.ext.asyncio import create_async_engine

    _async_engine = create_async_engine(url.set(drivername="sqlite+aiosqlite"))
    return _async_engine


# --- API models -------------------------------------------------------------------------------


class ProductIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=500)
    price: float = Field(gt=0, le=100_000)


class ProductOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    price: float


class ReviewOut(BaseModel):
    id: int
    rating: int
    comment: str


class ProductReviews(BaseModel):
    product_id: int
    average_rating: float | None
    reviews: list[ReviewOut]


class Checkout(BaseModel):
    product: ProductOut
    in_stock: int
    available: bool


# --- Shop service -----------------------------------------------------------------------------

app = FastAPI(title="Shop", version="1.0.0")


def load_product(product_id: int) -> Product:
    """Load one product, raising HTTPException 404 when it does not exist."""
    with Session(engine) as session:
        product = session.get(Product, product_id)
    if product is None:
        raise HTTPException(status_code=404, detail=f"Product {product_id} not found")
    return product


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/products", response_model=list[ProductOut])
def list_products(limit: Annotated[int, Query(ge=1, le=100)] = 20) -> list[Product]:
    with Session(engine) as session:
        return list(session.scalars(select(Product).order_by(Product.id).limit(limit)))


@app.get("/products/{product_id}", response_model=ProductOut)
def get_product(product_id: int) -> Product:
    return load_product(product_id)


@app.post("/products", response_model=ProductOut, status_code=201)
def create_product(body: ProductIn) -> Product:
    product = Product(name=body.name, description=body.description, price=body.price)
    with Session(engine, expire_on_commit=False) as session:
        session.add(product)
        session.commit()
    return product


@app.get("/products/{product_id}/reviews", response_model=ProductReviews)
async def list_product_reviews(product_id: int) -> ProductReviews:
    async_engine = get_async_engine()
    async with async_engine.connect() as connection:
        product_id_found = await connection.scalar(select(Product.id).where(Product.id == product_id))
        if product_id_found is None:
            raise HTTPException(status_code=404, detail=f"Product {product_id} not found")
        result = await connection.execute(
            select(Review.id, Review.rating, Review.comment)
            .where(Review.product_id == product_id)
            .order_by(Review.id)
        )
        reviews = [ReviewOut(id=row.id, rating=row.rating, comment=row.comment) for row in result]

    average = sum(review.rating for review in reviews) / len(reviews) if reviews else None
    return ProductReviews(product_id=product_id, average_rating=average, reviews=reviews)


@app.get("/orders/{order_id}/broken")
def get_archived_order(order_id: int) -> dict[str, Any]:
    """Read an order from a table that no migration ever created, so the query fails with 500.

    The database error is deliberately left unhandled, to show how a failing query is reported.
    """
    with Session(engine) as session:
        row = session.execute(
            text("SELECT id, status, total FROM order_archive WHERE id = :order_id"),
            {"order_id": order_id},
        ).one()
    return {"id": row.id, "status": row.status, "total": row.total}


@app.get("/checkout/{product_id}", response_model=Checkout)
async def checkout(product_id: int) -> Checkout:
    """Combine a product with its stock level from the inventory service.

    Connection errors and error statuses from the inventory service propagate and return 500.
    """
    product = await run_in_threadpool(load_product, product_id)

    async with httpx.AsyncClient(base_url=settings.inventory_url, timeout=5.0) as client:
        response = await client.get(f"/inventory/{product_id}")
        response.raise_for_status()
    in_stock = int(response.json()["in_stock"])

    return Checkout(
        product=ProductOut.model_validate(product),
        in_stock=in_stock,
        available=in_stock > 0,
    )


@app.get("/slow")
def slow() -> dict[str, Any]:
    time.sleep(settings.slow_seconds)
    with Session(engine) as session:
        product_count = session.scalar(select(func.count()).select_from(Product))
    return {"slept_seconds": settings.slow_seconds, "product_count": product_count}


EXPIRED_DISCOUNT_CODES = {"SPRING"}


def check_discount_code(code: str) -> None:
    if code in EXPIRED_DISCOUNT_CODES:
        raise ValueError(f"discount code {code} is expired")


def price_with_discount(price: float, code: str) -> float:
    check_discount_code(code)
    return round(price * 0.9, 2)


@app.get("/boom")
def boom() -> dict[str, float]:
    """Price a basket with an expired discount code, so a plain ValueError escapes and returns 500."""
    return {"total": price_with_discount(49.0, "SPRING")}


# --- Support desk -----------------------------------------------------------------------------
#
# These routes leak secrets and personal data into telemetry on purpose, the way real apps do.
# They set span attributes and events from request data and inline literals in SQL. They pass the
# caller's credentials on in the query, headers and URL of outgoing calls. Their exceptions quote
# their input, and a failing batch insert lists the rows. They exist to test the distro's privacy
# scrubber (tests/test_scrub_e2e.py, tests/test_scrub_properties.py), so do not copy them.


class TicketIn(BaseModel):
    email: str = Field(min_length=3, max_length=254)
    subject: str = Field(min_length=1, max_length=500)
    message: str = Field(default="", max_length=5000)
    # The order number as the customer typed it, e.g. "A-1042".
    order_ref: str | None = Field(default=None, max_length=500)


class TicketOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    subject: str
    order_id: int | None


class CreatedTicket(TicketOut):
    access_token: str


class TicketSearch(BaseModel):
    text: str = Field(min_length=1, max_length=2000)
    limit: int = Field(default=20, ge=1, le=100)


class TicketSummary(BaseModel):
    id: int
    subject: str


class ImportedTicket(BaseModel):
    external_ref: str = Field(min_length=1, max_length=64)
    email: str = Field(min_length=3, max_length=254)
    subject: str = Field(min_length=1, max_length=200)
    message: str = Field(default="", max_length=5000)


class TicketImport(BaseModel):
    # The helpdesk database the tickets were exported from, e.g. postgresql://user:password@host/db.
    source_url: str = Field(min_length=1, max_length=2000)
    tickets: list[ImportedTicket] = Field(default_factory=list, max_length=1000)


class FeedCheck(BaseModel):
    feed_url: str = Field(min_length=1, max_length=2000)


class TicketCache:
    """Redis cache of ticket states for the support dashboard.

    No Redis server runs in this example, so nothing is sent anywhere: `store` keeps the value in
    memory and records the client spans that opentelemetry-instrumentation-redis records for a new
    connection and one SET command. The AUTH span carries the URL's user name and password in
    ``db.statement``, as redis-py sends them.
    """

    def __init__(self, url: str | None) -> None:
        self._url = urlsplit(url) if url else None
        self._values: dict[str, str] = {}
        self._tracer = trace.get_tracer("shop.support.cache")

    def store(self, key: str, value: str) -> None:
        self._values[key] = value
        if self._url is None:
            return
        username = unquote(self._url.username or "") or "default"
        password = unquote(self._url.password or "")
        self._record_command("AUTH", f"AUTH {username} {password}")
        self._record_command("SET", f"SET {key} {value}")

    def _record_command(self, command: str, statement: str) -> None:
        assert self._url is not None
        attributes = {
            "db.system": "redis",
            "db.statement": statement,
            "db.redis.database_index": int(self._url.path.strip("/") or 0),
            "net.peer.name": self._url.hostname or "",
            "net.peer.port": self._url.port or 6379,
            "net.transport": "ip_tcp",
        }
        with self._tracer.start_as_current_span(command, kind=SpanKind.CLIENT, attributes=attributes):
            pass


ticket_cache = TicketCache(settings.support_cache_url)

# Headers with the calling agent's credentials that the shop passes on to the inventory service.
AGENT_CREDENTIAL_HEADERS = ("authorization", "private-token", "x-shopify-access-token")


@app.post("/support/tickets", response_model=CreatedTicket, status_code=201)
def create_ticket(
    body: TicketIn, x_support_identity: Annotated[str | None, Header()] = None
) -> SupportTicket:
    """Open a ticket. An ``order_ref`` that is not ``A-<number>`` raises ValueError (500).

    ``X-Support-Identity`` is the customer's identity as the chat widget signed it, a JWT.
    """
    span = trace.get_current_span()
    span.set_attribute("support.customer.email", body.email)
    span.set_attribute("support.ticket.subject", body.subject)
    span.add_event("support.ticket.received", {"support.ticket.message": body.message})
    if x_support_identity:
        span.add_event("support.customer.identified", {"support.identity": x_support_identity})

    order_id = None
    if body.order_ref:
        # int() raises "invalid literal for int() with base 10: '<input>'", quoting the input.
        order_id = int(body.order_ref.strip().removeprefix("A-"))

    ticket = SupportTicket(email=body.email, subject=body.subject, message=body.message, order_id=order_id)
    with Session(engine, expire_on_commit=False) as session:
        session.add(ticket)
        session.commit()
    ticket_cache.store(f"support:ticket:{ticket.id}:state", "open")
    return ticket


@app.get("/support/tickets/{ticket_id}", response_model=TicketOut)
def get_ticket(ticket_id: int, token: str) -> SupportTicket:
    """Show a ticket to the customer who follows the link ``/support/tickets/<id>?token=<access token>``.

    A wrong token returns 404, as a missing ticket does.
    """
    with Session(engine) as session:
        ticket = session.get(SupportTicket, ticket_id)
    if ticket is None or not secrets.compare_digest(ticket.access_token.encode(), token.encode()):
        raise HTTPException(status_code=404, detail=f"Ticket {ticket_id} not found")
    return ticket


@app.post("/support/search", response_model=list[TicketSummary])
def search_tickets(body: TicketSearch) -> list[TicketSummary]:
    """Find tickets whose subject or message contains ``text``, newest first."""
    # The search text is inlined as an SQL string literal, with its quotes doubled.
    pattern = "%" + body.text.replace("'", "''") + "%"
    statement = (
        "SELECT id, subject FROM support_tickets "
        f"WHERE subject LIKE '{pattern}' OR message LIKE '{pattern}' "
        f"ORDER BY id DESC LIMIT {body.limit}"
    )
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(statement).all()
    return [TicketSummary(id=row.id, subject=row.subject) for row in rows]


@app.get("/support/stock/{product_id}")
async def support_stock(product_id: int, request: Request) -> dict[str, int]:
    """Return a product's stock level, asking the inventory service with the agent's credentials.

    The headers in `AGENT_CREDENTIAL_HEADERS` are passed on as they came. The inventory service's
    older API takes its key in the query string, so ``X-Api-Key`` becomes ``?api_key=``.
    """
    headers = {name: request.headers[name] for name in AGENT_CREDENTIAL_HEADERS if name in request.headers}
    api_key = request.headers.get("x-api-key")
    params = {"api_key": api_key} if api_key else {}

    async with httpx.AsyncClient(base_url=settings.inventory_url, timeout=5.0) as client:
        response = await client.get(f"/inventory/{product_id}", params=params, headers=headers)
        response.raise_for_status()
    return {"product_id": product_id, "in_stock": int(response.json()["in_stock"])}


@app.post("/support/integrations/check")
async def check_stock_feed(body: FeedCheck) -> dict[str, int]:
    """Fetch a partner's stock feed once, as the "test connection" button of a set-up page does.

    The feed URL may carry credentials (``http://user:password@host/...?token=...``). Only URLs with
    the inventory service's scheme, host and port are fetched, and other URLs return 422. So a
    request never makes the shop call an address of the request's choosing. A feed that does not
    return 200 with an ``in_stock`` field raises RuntimeError (500) whose message contains the URL.
    """
    try:
        url = httpx.URL(body.feed_url)
    except httpx.InvalidURL:
        raise HTTPException(status_code=422, detail="feed_url is not a valid URL") from None
    inventory = httpx.URL(settings.inventory_url)
    if (url.scheme, url.host, url.port) != (inventory.scheme, inventory.host, inventory.port):
        raise HTTPException(
            status_code=422, detail="feed_url must use the scheme, host and port of SHOP_INVENTORY_URL"
        )

    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.get(url)
    if response.status_code != 200 or "in_stock" not in response.json():
        raise RuntimeError(f"The stock feed {body.feed_url} is not usable: HTTP {response.status_code}")
    return {"in_stock": int(response.json()["in_stock"])}


@app.post("/support/import", status_code=201)
def import_tickets(body: TicketImport) -> dict[str, int]:
    """Import tickets exported from a legacy helpdesk, in one batch insert.

    ``source_url`` is recorded on the span for auditing. Without ``tickets`` the rows would have to
    be read from that database, which this example cannot do: it raises ConnectionError (500)
    naming the URL, and never connects. An ``external_ref`` that exists already makes the insert
    fail with IntegrityError (500), whose message lists the rows.
    """
    trace.get_current_span().set_attribute("support.import.source", body.source_url)
    if not body.tickets:
        raise ConnectionError(f"Cannot read tickets from {body.source_url}: this example has no driver for it")

    rows = [ticket.model_dump() for ticket in body.tickets]
    with engine.begin() as connection:
        connection.execute(SupportTicket.__table__.insert(), rows)
    return {"imported": len(rows)}


# --- Inventory service ------------------------------------------------------------------------

inventory_app = FastAPI(title="Inventory", version="1.0.0")

# Units in the warehouse per product id. Products that are not listed have none in stock.
STOCK_LEVELS = {1: 42, 2: 7, 3: 0, 4: 250}


@inventory_app.get("/health")
def inventory_health() -> dict[str, str]:
    return {"status": "ok"}


@inventory_app.get("/inventory/{product_id}")
def get_inventory(product_id: int) -> dict[str, int]:
    return {"product_id": product_id, "in_stock": STOCK_LEVELS.get(product_id, 0)}
