"""Example shop service that the demo and the end-to-end tests run under the distro.

The module contains no telemetry code: ``opentelemetry-instrument`` adds all of it from
outside, configured by environment variables. It defines two ASGI apps:

* ``app``, the shop: ``uvicorn shop_app:app --app-dir examples``
* ``inventory_app``, the stock service that the shop calls over HTTP:
  ``uvicorn shop_app:inventory_app --app-dir examples --port 8001``

Settings, read once at import:

* ``SHOP_DATABASE_URL``: SQLAlchemy URL of the shop database, default ``sqlite:///./shop.db``
  (a file in the current directory).
* ``SHOP_INVENTORY_URL``: base URL of the inventory service, default ``http://127.0.0.1:8001``.
* ``SHOP_SLOW_SECONDS``: how long ``GET /slow`` sleeps before its query, in seconds, default 0.3.
"""

import importlib
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import httpx
from fastapi import FastAPI, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
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

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            database_url=os.environ.get("SHOP_DATABASE_URL", "sqlite:///./shop.db"),
            inventory_url=os.environ.get("SHOP_INVENTORY_URL", "http://127.0.0.1:8001").rstrip("/"),
            slow_seconds=float(os.environ.get("SHOP_SLOW_SECONDS", "0.3")),
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
