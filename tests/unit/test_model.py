"""The records of wgmesh.model (and the other frozen dataclasses on `Value`) behave exactly as
@dataclass(frozen=True) would make them: they take their equality, hash and repr from `Value`
only to spare dataclass() compiling them at every start (see the module's docstring)."""

from __future__ import annotations

import dataclasses
import ipaddress
import pickle

import pytest

from wgmesh import model
from wgmesh.commands.addpeer import KeyImport
from wgmesh.model import Peer, Value
from wgmesh.peers import PeerOptions

RECORDS = [cls for cls in vars(model).values()
           if isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls.__module__ == model.__name__]
ON_VALUE = [*RECORDS, PeerOptions, KeyImport]


def reference(cls: type) -> type:
    """The same class as plain @dataclass(frozen=True) makes it."""
    specs = []
    for f in dataclasses.fields(cls):
        kw = {"repr": f.repr}
        if f.default is not dataclasses.MISSING:
            kw["default"] = f.default
        if f.default_factory is not dataclasses.MISSING:
            kw["default_factory"] = f.default_factory
        specs.append((f.name, f.type, dataclasses.field(**kw)))
    ref = dataclasses.make_dataclass(cls.__name__, specs, frozen=True)
    ref.__qualname__ = cls.__qualname__
    return ref


def samples(cls: type) -> list[dict]:
    """Keyword arguments for a few instances of `cls`: every required field, then each field
    changed in turn (to another value of the kind it holds)."""
    required = {f.name: f"v-{f.name}" for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    out = [required]
    for f in dataclasses.fields(cls):
        out.append({**required, f.name: ("other", f.name)})
    return out


def test_every_record_is_on_value_with_its_own_docstring():
    assert len(RECORDS) == 11
    for cls in ON_VALUE:
        assert issubclass(cls, Value), cls
        params = cls.__dataclass_params__  # type: ignore[attr-defined]
        assert params.frozen and not params.eq and not params.repr, cls
        # Without a docstring of its own, dataclass() would write one with inspect.signature at each start.
        assert cls.__doc__ and not cls.__doc__.startswith(f"{cls.__name__}("), cls


@pytest.mark.parametrize("cls", ON_VALUE, ids=lambda c: c.__name__)
def test_equality_hash_repr_and_frozenness_are_dataclasses(cls):
    ref = reference(cls)
    made = [(cls(**kw), ref(**kw)) for kw in samples(cls)]
    for a, ra in made:
        assert repr(a) == repr(ra)
        assert a == cls(**{f.name: getattr(a, f.name) for f in dataclasses.fields(cls)})
        for b, rb in made:
            assert (a == b) == (ra == rb)
            assert (a != b) == (ra != rb)
        try:
            assert hash(a) == hash(ra)
        except TypeError:  # a field holds a dict (HostState.peers): unhashable, as the dataclass is
            with pytest.raises(TypeError):
                hash(ra)
        assert a != ra and a.__eq__(ra) is NotImplemented  # another class, even with the same fields
        with pytest.raises(dataclasses.FrozenInstanceError):
            a.x = 1  # type: ignore[attr-defined]
        first = dataclasses.fields(cls)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            delattr(a, first)
        assert dataclasses.replace(a) == a


def test_hidden_fields_stay_out_of_the_repr():
    kp = model.KeyPair(private="secret", public="pub")
    assert "secret" not in repr(kp) and repr(kp) == "KeyPair(public='pub')"


def test_a_peer_pickles_and_keeps_its_cached_allowed_ips():
    p = Peer(name="a", address=ipaddress.ip_address("10.200.0.1"),
             subnets=(ipaddress.ip_network("10.1.0.0/24"),))
    assert p.allowed_ips  # cached in the instance: still equal, still hashable, still frozen
    again = pickle.loads(pickle.dumps(p))
    assert again == p and hash(again) == hash(p)


@pytest.mark.parametrize("address,address6", [
    ("10.200.0.7", None), ("10.200.0.7", "fd00::7"), ("fd00:1::7", None), ("0.0.0.1", "::1"),
])
def test_allowed_ips_are_what_ip_network_makes_of_the_tunnel_addresses(address, address6):
    a = ipaddress.ip_address(address)
    a6 = ipaddress.ip_address(address6) if address6 else None
    subnets = (ipaddress.ip_network("10.1.0.0/24"), ipaddress.ip_network("2001:db8::/64"))
    p = Peer(name="a", address=a, address6=a6, subnets=subnets)
    want = (*(ipaddress.ip_network(x) for x in p.tunnel_addresses), *subnets)
    assert p.allowed_ips == want
    assert [str(n) for n in p.allowed_ips] == [str(n) for n in want]
    assert [list(n.hosts()) for n in p.allowed_ips[:len(p.tunnel_addresses)]] == [list(n.hosts()) for n in want[:-2]]


@pytest.mark.parametrize("cls", [Peer, PeerOptions], ids=lambda c: c.__name__)
def test_a_written_out_init_takes_the_fields_as_dataclass_would(cls):
    import inspect

    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert [p.name for p in params] == [f.name for f in dataclasses.fields(cls)]
    for p, f in zip(params, dataclasses.fields(cls), strict=True):
        assert p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        assert p.default == (inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default), f.name
        assert f.default_factory is dataclasses.MISSING
    ref = reference(cls)
    args = [f"v{i}" for i in range(len(params))]
    assert vars(cls(*args)) == vars(ref(*args))
    assert vars(cls(*args[:2])) == vars(ref(*args[:2]))
