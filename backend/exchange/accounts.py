"""Balances per account: free and locked per asset (Decimal, exact). An order locks what it may
spend (a buy its quote at the limit price, a sell its base); a fill moves the traded amounts and
the commission; what an order leaves unspent is freed when it finishes.

Accounts the set calls unlimited (the exchange's own market maker) are never checked nor
moved. The assets touched since the last `take_touched` are kept, for the user data stream's
`outboundAccountPosition` events."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

ZERO = Decimal(0)


class InsufficientBalance(Exception):
    pass


class Accounts:
    def __init__(self, unlimited: Iterable[str] = ()) -> None:
        self.free: dict[str, dict[str, Decimal]] = {}
        self.locked: dict[str, dict[str, Decimal]] = {}
        self.unlimited = set(unlimited)
        self.touched: dict[str, dict[str, None]] = {}
        self.update_ms: dict[str, int] = {}

    def open(self, account: str, balances: Mapping[str, Decimal | float | str]) -> None:
        """Create `account` (or top it up) with `balances` free."""
        free = self.free.setdefault(account, {})
        self.locked.setdefault(account, {})
        for asset, amount in balances.items():
            free[asset] = free.get(asset, ZERO) + Decimal(str(amount))

    def known(self, account: str) -> bool:
        return account in self.free or account in self.unlimited

    def _touch(self, account: str, asset: str) -> None:
        self.touched.setdefault(account, {})[asset] = None

    def lock(self, account: str, asset: str, amount: Decimal) -> None:
        if account in self.unlimited or amount <= 0:
            return
        free = self.free.setdefault(account, {})
        have = free.get(asset, ZERO)
        if have < amount:
            raise InsufficientBalance(f"{account} has {have} {asset}, needs {amount}")
        free[asset] = have - amount
        lk = self.locked.setdefault(account, {})
        lk[asset] = lk.get(asset, ZERO) + amount
        self._touch(account, asset)

    def unlock(self, account: str, asset: str, amount: Decimal) -> None:
        if account in self.unlimited or amount <= 0:
            return
        lk = self.locked.setdefault(account, {})
        amount = min(amount, lk.get(asset, ZERO))
        lk[asset] = lk.get(asset, ZERO) - amount
        free = self.free.setdefault(account, {})
        free[asset] = free.get(asset, ZERO) + amount
        self._touch(account, asset)

    def spend_locked(self, account: str, asset: str, amount: Decimal) -> None:
        if account in self.unlimited or amount <= 0:
            return
        lk = self.locked.setdefault(account, {})
        lk[asset] = lk.get(asset, ZERO) - amount
        self._touch(account, asset)

    def spend_free(self, account: str, asset: str, amount: Decimal) -> None:
        if account in self.unlimited or amount <= 0:
            return
        free = self.free.setdefault(account, {})
        free[asset] = free.get(asset, ZERO) - amount
        self._touch(account, asset)

    def credit(self, account: str, asset: str, amount: Decimal) -> None:
        if account in self.unlimited or amount == 0:
            return
        free = self.free.setdefault(account, {})
        free[asset] = free.get(asset, ZERO) + amount
        self._touch(account, asset)

    def balance(self, account: str, asset: str) -> tuple[Decimal, Decimal]:
        """(free, locked)."""
        return self.free.get(account, {}).get(asset, ZERO), self.locked.get(account, {}).get(asset, ZERO)

    def assets(self, account: str) -> list[str]:
        return sorted(set(self.free.get(account, {})) | set(self.locked.get(account, {})))

    def take_touched(self, account: str) -> list[str]:
        return list(self.touched.pop(account, {}))
