"""The app that `bench/overhead.py` runs in every setup: FastAPI with SQLAlchemy on SQLite.

It has no telemetry code, so the same file runs bare, under ``opentelemetry-instrument`` (stock
OpenTelemetry or raptorflow-otel) and under sentry-sdk (`overhead_sentry_app` initializes the SDK
and imports this module). ``BENCH_DATABASE_URL`` names the database; each process gets its own
SQLite file so that setups never share a lock.

Routes, one per request kind of the benchmark's mix (`overhead_mix.request_at`):

* ``GET /items/{id}``: one SELECT, 200, or 404 when the id does not exist;
* ``POST /signup``: personal data in the query string, the headers and the JSON body, one
  SELECT with a bound e-mail parameter, 200;
* ``GET /orders/{id}/refund``: one SELECT, then an unhandled exception (500);
* any other path: 404 from the router, no query.
"""

import os

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "sqlite:///./bench-overhead.db")


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    price: Mapped[float]


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), index=True)


engine = create_engine(DATABASE_URL)
Base.metadata.create_all(engine)
with Session(engine) as _session:
    if _session.get(Item, 1) is None:
        _session.add_all(Item(id=number, name=f"Item {number}", price=number * 1.5) for number in range(1, 101))
        _session.add(Customer(id=1, email="existing@example.com"))
        _session.commit()


class Signup(BaseModel):
    email: str
    password: str
    phone: str = ""


class RefundFailed(RuntimeError):
    """Error of the refund route: a bug in the app, reported as an unhandled exception."""


app = FastAPI()


@app.get("/items/{item_id}")
def get_item(item_id: int) -> dict:
    with Session(engine) as session:
        item = session.get(Item, item_id)
    if item is None:
        raise HTTPException(status_code=404, detail="item not found")
    return {"id": item.id, "name": item.name, "price": item.price}


@app.post("/signup")
def signup(body: Signup) -> dict:
    with Session(engine) as session:
        existing = session.scalar(select(Customer.id).where(Customer.email == body.email))
    return {"created": existing is None}


@app.get("/orders/{order_id}/refund")
def refund(order_id: int) -> dict:
    with Session(engine) as session:
        item = session.get(Item, order_id)
    raise RefundFailed(f"refund of order {order_id} failed: payment provider returned no id for {item.name}")
