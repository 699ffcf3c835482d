"""Chain profiles: the constants that differ between Hive and Steem."""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import ConfigError

NULL_KEY = "STM1111111111111111111111111111111114T1Anm"
ADDRESS_PREFIX = "STM"
BLOCK_INTERVAL_S = 3
TAPOS_WINDOW = 0x10000
MAX_EXPIRATION_S = 3600


@dataclass(frozen=True)
class Asset:
    """One asset of a chain: display symbol, binary (legacy) name, NAI and precision."""

    symbol: str
    legacy_name: str
    nai: str
    precision: int


@dataclass(frozen=True)
class ChainProfile:
    """Everything the code needs to know to speak one chain correctly."""

    name: str
    chain_id: str
    config_prefix: str
    core: Asset
    debt: Asset
    vests: Asset
    interest_field: str
    exchange_rate_field: str

    @property
    def foreign_interest_field(self) -> str:
        """The other chain's interest field, which hived silently ignores here."""
        return "sbd_interest_rate" if self.interest_field == "hbd_interest_rate" else (
            "hbd_interest_rate"
        )

    def asset_by_symbol(self, symbol: str) -> Asset:
        """Return the asset with display symbol ``symbol``.

        Raises:
            KeyError: the chain has no such asset.
        """
        for asset in (self.core, self.debt, self.vests):
            if asset.symbol == symbol:
                return asset
        raise KeyError(symbol)

    def asset_by_nai(self, nai: str) -> Asset:
        """Return the asset with NAI ``nai``.

        Raises:
            KeyError: the chain has no such asset.
        """
        for asset in (self.core, self.debt, self.vests):
            if asset.nai == nai:
                return asset
        raise KeyError(nai)


# hived serialises HIVE and HBD under their pre-fork binary names STEEM and SBD,
# so both chains share the packed symbol bytes (libraries/protocol/asset_symbol).
_VESTS = Asset("VESTS", "VESTS", "@@000000037", 6)

HIVE = ChainProfile(
    name="hive",
    chain_id="beeab0de" + "0" * 56,
    config_prefix="HIVE_",
    core=Asset("HIVE", "STEEM", "@@000000021", 3),
    debt=Asset("HBD", "SBD", "@@000000013", 3),
    vests=_VESTS,
    interest_field="hbd_interest_rate",
    exchange_rate_field="hbd_exchange_rate",
)

STEEM = ChainProfile(
    name="steem",
    chain_id="0" * 64,
    config_prefix="STEEM_",
    core=Asset("STEEM", "STEEM", "@@000000021", 3),
    debt=Asset("SBD", "SBD", "@@000000013", 3),
    vests=_VESTS,
    interest_field="sbd_interest_rate",
    exchange_rate_field="sbd_exchange_rate",
)

PROFILES: dict[str, ChainProfile] = {"hive": HIVE, "steem": STEEM}


def profile(name: str) -> ChainProfile:
    """Return the profile called ``name``.

    Raises:
        ConfigError: no such profile.
    """
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown chain {name!r}; expected one of {sorted(PROFILES)}",
                          field="chain") from None
