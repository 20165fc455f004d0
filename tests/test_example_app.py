"""Behaviour of the example shop service in examples/shop_app.py, without any telemetry."""

import asyncio
import dataclasses
import importlib
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import uvicorn
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

with warnings.catch_warnings():
    # Starlette 1.10 deprecates running its test client on httpx in favour of httpx2.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


def bind_loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def import_shop_app() -> ModuleType:
    """Import shop_app, or reload it so that it reads the current environment again."""
    module = sys.modules.get("shop_app")
    if module is None:
        return importlib.import_module("shop_app")
    module.engine.dispose()
    return importlib.reload(module)


@pytest.fixture(scope="module")
def inventory_socket() -> Iterator[socket.socket]:
    # The shop reads SHOP_INVENTORY_URL at import, so the inventory port must be known first.
    sock = bind_loopback_socket()
    yield sock
    sock.close()


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, inventory_socket: socket.socket) -> Iterator[ModuleType]:
    database_path = tmp_path_factory.mktemp("shop") / "shop.db"
    port = inventory_socket.getsockname()[1]

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("SHOP_DATABASE_URL", f"sqlite:///{database_path}")
        monkeypatch.setenv("SHOP_INVENTORY_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("SHOP_SLOW_SECONDS", "0.05")
        monkeypatch.syspath_prepend(str(EXAMPLES_DIR))
        module = import_shop_app()
        yield module

        module.engine.dispose()
        if module._async_engine is not None:
            asyncio.run(module._async_engine.dispose())
        sys.modules.pop("shop_app", None)


@pytest.fixture(scope="module")
def inventory_url(shop: ModuleType, inventory_socket: socket.socket) -> Iterator[str]:
    """Serve shop_app.inventory_app with uvicorn on a loopback port in a background thread."""
    config = uvicorn.Config(shop.inventory_app, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [inventory_socket]}, daemon=True)
    thread.start()

    deadline = time.monotonic() + 5
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("The inventory server did not start within 5 seconds.")
        time.sleep(0.01)

    yield shop.settings.inventory_url

    server.should_exit = True
    thread.join(timeout=5)


@pytest.fixture
def client(shop: ModuleType) -> Iterator[TestClient]:
    # Unhandled exceptions become 500 responses, as they do behind uvicorn.
    with TestClient(shop.app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_settings_come_from_environment(shop: ModuleType, inventory_socket: socket.socket) -> None:
    port = inventory_socket.getsockname()[1]
    assert shop.settings.inventory_url == f"http://127.0.0.1:{port}"
    assert shop.settings.slow_seconds == 0.05
    assert shop.engine.url.database.endswith("shop.db")


def test_health(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_list_products_returns_seed_data(client: TestClient) -> None:
    response = client.get("/products")
    assert response.status_code == 200
    products = response.json()
    assert len(products) >= 4
    assert products[0]["name"] == "Espresso beans, 1 kg"
    assert set(products[0]) == {"id", "name", "description", "price"}


def test_list_products_limit(client: TestClient) -> None:
    response = client.get("/products", params={"limit": 2})
    assert response.status_code == 200
    assert [product["id"] for product in response.json()] == [1, 2]


def test_list_products_invalid_limit(client: TestClient) -> None:
    response = client.get("/products", params={"limit": 0})
    assert response.status_code == 422


def test_get_product(client: TestClient) -> None:
    response = client.get("/products/3")
    assert response.status_code == 200
    assert response.json()["name"] == "Burr grinder"


def test_get_unknown_product(client: TestClient) -> None:
    response = client.get("/products/9999")
    assert response.status_code == 404
    assert response.json() == {"detail": "Product 9999 not found"}


def test_create_product(client: TestClient) -> None:
    response = client.post("/products", json={"name": "Travel mug", "price": 18.0})
    assert response.status_code == 201
    created = response.json()
    assert created["name"] == "Travel mug"
    assert created["description"] == ""

    fetched = client.get(f"/products/{created['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == created


def test_create_product_invalid_body(client: TestClient) -> None:
    response = client.post("/products", json={"name": "", "price": -3})
    assert response.status_code == 422
    error_fields = {tuple(error["loc"]) for error in response.json()["detail"]}
    assert error_fields == {("body", "name"), ("body", "price")}


def test_create_product_missing_body(client: TestClient) -> None:
    response = client.post("/products")
    assert response.status_code == 422


def test_seeding_skipped_when_table_has_rows(shop: ModuleType) -> None:
    count_products = select(func.count()).select_from(shop.Product)
    with Session(shop.engine) as session:
        before = session.scalar(count_products)

    shop.seed_database()

    with Session(shop.engine) as session:
        assert session.scalar(count_products) == before


def test_database_setup_retries_after_race(shop: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def seed_after_losing_race() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise IntegrityError("INSERT INTO products", {}, Exception("UNIQUE constraint failed"))

    monkeypatch.setattr(shop, "seed_database", seed_after_losing_race)

    shop.set_up_database()

    assert len(calls) == 2


def test_database_setup_gives_up(shop: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    def always_locked() -> None:
        raise OperationalError("INSERT INTO products", {}, Exception("database is locked"))

    monkeypatch.setattr(shop, "seed_database", always_locked)

    with pytest.raises(OperationalError, match="database is locked"):
        shop.set_up_database(max_attempts=2)


def test_reviews_use_async_engine(client: TestClient) -> None:
    response = client.get("/products/1/reviews")
    assert response.status_code == 200
    body = response.json()
    assert body["average_rating"] == 4.5
    assert [review["rating"] for review in body["reviews"]] == [5, 4]


def test_reviews_for_product_without_reviews(client: TestClient) -> None:
    response = client.get("/products/2/reviews")
    assert response.status_code == 200
    assert response.json() == {"product_id": 2, "average_rating": None, "reviews": []}


def test_reviews_for_unknown_product(client: TestClient) -> None:
    response = client.get("/products/9999/reviews")
    assert response.status_code == 404


@pytest.mark.parametrize("missing_module", ["greenlet", "aiosqlite"])
def test_reviews_without_async_driver(
    shop: ModuleType, client: TestClient, monkeypatch: pytest.MonkeyPatch, missing_module: str
) -> None:
    # A None entry in sys.modules makes `import` raise ImportError, as if the package were absent.
    monkeypatch.setitem(sys.modules, missing_module, None)
    monkeypatch.setattr(shop, "_async_engine", None)

    response = client.get("/products/1/reviews")

    assert response.status_code == 503
    assert f"pip install {missing_module}" in response.json()["detail"]


def test_failing_query_returns_500(shop: ModuleType, client: TestClient) -> None:
    response = client.get("/orders/7/broken")
    assert response.status_code == 500


def test_failing_query_raises_database_error(shop: ModuleType) -> None:
    with TestClient(shop.app) as raising_client:
        with pytest.raises(OperationalError, match="no such table: order_archive"):
            raising_client.get("/orders/7/broken")


def test_slow_route(client: TestClient) -> None:
    started = time.monotonic()
    response = client.get("/slow")
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert response.json()["slept_seconds"] == 0.05
    assert response.json()["product_count"] >= 4
    assert elapsed >= 0.05


def test_boom_returns_500(client: TestClient) -> None:
    response = client.get("/boom")
    assert response.status_code == 500


def test_boom_raises_value_error(shop: ModuleType) -> None:
    with TestClient(shop.app) as raising_client:
        with pytest.raises(ValueError, match="discount code SPRING is expired"):
            raising_client.get("/boom")


def test_checkout_calls_inventory(client: TestClient, inventory_url: str) -> None:
    response = client.get("/checkout/1")
    assert response.status_code == 200
    body = response.json()
    assert body["product"]["name"] == "Espresso beans, 1 kg"
    assert body["in_stock"] == 42
    assert body["available"] is True


def test_checkout_out_of_stock(client: TestClient, inventory_url: str) -> None:
    response = client.get("/checkout/3")
    assert response.status_code == 200
    assert response.json()["in_stock"] == 0
    assert response.json()["available"] is False


def test_checkout_unknown_product(client: TestClient, inventory_url: str) -> None:
    response = client.get("/checkout/9999")
    assert response.status_code == 404


def test_checkout_inventory_unreachable(
    shop: ModuleType, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed_socket = bind_loopback_socket()
    closed_port = closed_socket.getsockname()[1]
    closed_socket.close()
    unreachable = dataclasses.replace(shop.settings, inventory_url=f"http://127.0.0.1:{closed_port}")
    monkeypatch.setattr(shop, "settings", unreachable)

    response = client.get("/checkout/1")

    assert response.status_code == 500


def test_inventory_app_directly(shop: ModuleType) -> None:
    with TestClient(shop.inventory_app) as inventory_client:
        response = inventory_client.get("/inventory/2")
    assert response.status_code == 200
    assert response.json() == {"product_id": 2, "in_stock": 7}
