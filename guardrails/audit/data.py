"""Audit your own platform: load and validate exported files, and the platform the audit walks.

A platform is exported as a folder of ``.npz`` files (every one read with
``allow_pickle=False``). Required:

``interactions.npz``
    Users x candidate accounts, written by ``scipy.sparse.save_npz`` from a CSR matrix
    of shape ``(n_users, n_items)``: what the recommender is trained on. Weights are
    finite and non-negative (follows as 1, or engagement counts).
``seeds.npz`` (``numpy.savez``)
    ``seeds``: the accounts trust and safety flagged, as indices in ``[0, n_items)`` or a
    bool mask of length ``n_items``; never empty. Optional ``categories``: one label
    (int or str) per seed, in the order of the seed indices (ascending for a mask); the
    policy file sees ``seeds_<category>``. Optional ``flagged_terms``: flagged hashtags
    (column indices of ``terms.npz``).
``evaluation.npz`` (``numpy.savez``)
    Labels the guard never sees, kept out of the seeds. ``abusive``: known abusive
    accounts that are not seeds (indices or mask); exposure to them measures what the
    guard does about accounts it was not told about. Optional ``minors``: known minors'
    accounts (indices or mask over candidates), given to the guard as the platform's
    age signals, as the synthetic audit does, and measured in every slate. Optional
    ``minor_viewers``: users who are minors (indices or mask over users).

Optional:

``follows.npz``
    The follow graph between candidate accounts, CSR ``(n_items, n_items)``; risk
    propagates over it (otherwise over co-engagement in the interactions only).
``terms.npz``
    Hashtags (or link domains) each account uses, CSR ``(n_items, n_terms)``; with
    ``flagged_terms`` it enables the search-start walk and term-based risk.
``held_out.npz``
    Interactions the recommender was not trained on, CSR ``(n_users, n_items)``, sharing
    no pair with ``interactions.npz``. Required with ``factors.npz`` or ``model.npz``
    (quality measured on pairs the factors have seen would be in-sample); otherwise the
    audit holds out one interaction of each ordinary user with three or more.
``factors.npz`` (``numpy.savez``)
    ``user_factors`` ``(n_users, k)`` and ``item_factors`` ``(n_items, k)`` from your own
    trainer; new test accounts are folded in by ridge regression
    (:class:`guardrails.FactorModel`).
``model.npz``
    An implicit model written with its own ``save`` (ALS, BPR, LMF or item-item), read
    back with implicit's ``load``.

Without ``factors.npz`` or ``model.npz``, implicit's ALS is trained on the interactions.

:func:`load_data` (and :meth:`OwnData.from_arrays` for arrays already in memory) checks
everything before any work: every refusal is one :class:`~guardrails.ValidationError`
naming the file, the field and what was expected.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from ..exceptions import ValidationError
from ._checks import (
    bad,
    check_matrix,
    factors_array,
    flagged_term_ids,
    ids_mask,
    outside_seeds,
    own_model_needs,
    seed_categories,
)
from ._files import implicit_model, read_npz, sparse_file
from ._interactions import UsersByItems
from .guards import seed_risk

__all__ = ["OwnData", "DataPlatform", "load_data", "DATA_FILES"]

#: Every file :func:`load_data` reads, and whether it is required.
DATA_FILES = {
    "interactions.npz": True,
    "seeds.npz": True,
    "evaluation.npz": True,
    "follows.npz": False,
    "terms.npz": False,
    "held_out.npz": False,
    "factors.npz": False,
    "model.npz": False,
}
_FIELDS = {
    "seeds.npz": ("seeds", "categories", "flagged_terms"),
    "evaluation.npz": ("abusive", "minors", "minor_viewers"),
    "factors.npz": ("user_factors", "item_factors"),
}
#: Smallest number of interactions of a user the audit holds one out from.
MIN_HOLDOUT_INTERACTIONS = 3


def _held_out(held_out, ui: sp.csr_matrix, f: dict) -> sp.csr_matrix:
    """Held-out interactions: the shape of the interactions, sharing no pair with them."""
    ho = check_matrix(held_out, f["held_out.npz"], ui.shape, ("users", "candidate accounts"))
    overlap = ho.multiply(ui).nnz
    if overlap:
        raise bad(
            f["held_out.npz"],
            "data",
            f"pairs not in {f['interactions.npz']} (held out from training)",
            f"{overlap} pairs that are also interactions",
        )
    return ho


# ---------------------------------------------------------------------------- data
@dataclass(frozen=True, eq=False)
class OwnData(UsersByItems):
    """A platform's exported data, validated (see the module docstring for each field).

    Attributes
    ----------
    interactions : csr_matrix of float32, shape (n_users, n_items)
    seeds : ndarray of int64
        Flagged accounts (sorted, unique, never empty).
    abusive : ndarray of bool, shape (n_items,)
        Known abusive accounts outside the seeds (evaluation only).
    minors : ndarray of bool, shape (n_items,), or None
    minor_viewers : ndarray of bool, shape (n_users,), or None
    categories : ndarray, shape (n_seeds,), or None
        One category per seed, aligned with ``seeds``.
    follows : csr_matrix of float32, shape (n_items, n_items), or None
    terms : csr_matrix of float32, shape (n_items, n_terms), or None
    flagged_terms : ndarray of int64, or None
    held_out : csr_matrix of float32, shape (n_users, n_items), or None
    user_factors, item_factors : ndarray of float32, or None
    model : fitted implicit model, or None
    source : str
        The folder (or ``"<arrays>"``).
    """

    interactions: sp.csr_matrix
    seeds: np.ndarray
    abusive: np.ndarray
    minors: np.ndarray | None = None
    minor_viewers: np.ndarray | None = None
    categories: np.ndarray | None = None
    follows: sp.csr_matrix | None = None
    terms: sp.csr_matrix | None = None
    flagged_terms: np.ndarray | None = None
    held_out: sp.csr_matrix | None = None
    user_factors: np.ndarray | None = None
    item_factors: np.ndarray | None = None
    model: object = None
    source: str = "<arrays>"

    interactions_field: ClassVar[str] = "interactions"

    @classmethod
    def from_arrays(
        cls,
        *,
        interactions,
        seeds,
        abusive,
        minors=None,
        minor_viewers=None,
        categories=None,
        follows=None,
        terms=None,
        flagged_terms=None,
        held_out=None,
        user_factors=None,
        item_factors=None,
        model=None,
        source: str = "<arrays>",
        files: dict[str, str] | None = None,
    ) -> OwnData:
        """Validate arrays already in memory (the same checks as :func:`load_data`).

        ``files`` names the file each field came from in messages (default: the
        field's own file name in an exported folder).

        Raises
        ------
        ValidationError
            One line naming the file, the field and what was expected.
        """
        f = {k: k for k in DATA_FILES} | (files or {})
        # The file each field lives in, as the messages name it.
        ui = check_matrix(
            interactions, f["interactions.npz"], (None, None), ("users", "candidate accounts")
        )
        n_users, n_items = ui.shape
        if ui.nnz == 0:
            raise bad(f["interactions.npz"], "data", "at least one interaction", "none")
        src, ev = f["seeds.npz"], f["evaluation.npz"]
        seed_mask = ids_mask(seeds, n_items, src, "seeds", what_ids="candidate accounts")
        if not seed_mask.any():
            raise bad(src, "seeds", "at least one flagged account", "no seeds")
        seed_idx = np.flatnonzero(seed_mask).astype(np.int64)
        cats = None if categories is None else seed_categories(categories, seeds, src)
        follows_m = terms_m = None
        if follows is not None:
            follows_m = check_matrix(
                follows, f["follows.npz"], (n_items, n_items), ("accounts", "accounts")
            )
        if terms is not None:
            terms_m = check_matrix(terms, f["terms.npz"], (n_items, None), ("accounts", "terms"))
        flagged = flagged_term_ids(flagged_terms, terms_m, src, f["terms.npz"])
        ab = outside_seeds(
            abusive, seed_mask, ev, "abusive", "evaluation labels the guard never sees"
        )
        if not ab.any():
            raise bad(ev, "abusive", "at least one known abusive account (not a seed)", "none")
        mi = mv = ho = uf = itf = None
        if minors is not None:
            mi = outside_seeds(minors, seed_mask, ev, "minors", "minors are protected, not flagged")
        if minor_viewers is not None:
            mv = ids_mask(minor_viewers, n_users, ev, "minor_viewers", what_ids="users")
        if held_out is not None:
            ho = _held_out(held_out, ui, f)
        if (user_factors is None) != (item_factors is None):
            raise bad(
                f["factors.npz"],
                "item_factors" if item_factors is None else "user_factors",
                "given together with the other factors",
                "only one of them",
            )
        if user_factors is not None:
            itf = factors_array(item_factors, n_items, f["factors.npz"], "item_factors")
            uf = factors_array(
                user_factors, n_users, f["factors.npz"], "user_factors", itf.shape[1]
            )
        own_model_needs(
            f,
            model_given=model is not None,
            factors_given=uf is not None,
            held_out_given=ho is not None,
        )
        data = cls(
            interactions=ui,
            seeds=seed_idx,
            abusive=ab,
            minors=mi,
            minor_viewers=mv,
            categories=cats,
            follows=follows_m,
            terms=terms_m,
            flagged_terms=flagged,
            held_out=ho,
            user_factors=uf,
            item_factors=itf,
            model=model,
            source=source,
        )
        data._check_usable(f)
        return data

    def _check_usable(self, f: dict) -> None:
        """What the walks and metrics need: risky viewers and users to evaluate."""
        flagged = np.zeros(self.n_items, dtype=bool)
        flagged[self.seeds] = True
        flagged |= self.abusive
        if self.interactions[:, flagged].nnz == 0:
            raise bad(
                f["interactions.npz"],
                "data",
                "interactions of some user with a seed or abusive account (risky viewers)",
                "none",
            )
        if self.held_out is not None:
            if self.held_out.nnz == 0:
                raise bad(f["held_out.npz"], "data", "at least one held-out interaction", "none")
        elif not (np.diff(self.interactions.indptr) >= MIN_HOLDOUT_INTERACTIONS).any():
            raise bad(
                f["interactions.npz"],
                "data",
                f"some user with {MIN_HOLDOUT_INTERACTIONS} or more interactions "
                "(one is held out for recall@10)",
                "none",
            )

    def summary(self) -> dict:
        """Counts, JSON-ready."""
        out = {
            "source": self.source,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_interactions": int(self.interactions.nnz),
            "n_seeds": int(self.seeds.size),
            "n_abusive": int(self.abusive.sum()),
            "n_minors": 0 if self.minors is None else int(self.minors.sum()),
            "n_minor_viewers": 0 if self.minor_viewers is None else int(self.minor_viewers.sum()),
            "n_follows": 0 if self.follows is None else int(self.follows.nnz),
            "n_terms": 0 if self.terms is None else int(self.terms.shape[1]),
            "n_flagged_terms": 0 if self.flagged_terms is None else int(self.flagged_terms.size),
            "held_out_given": self.held_out is not None,
            "model": "als (trained)"
            if self.model is None and self.user_factors is None
            else ("factors" if self.user_factors is not None else type(self.model).__name__),
        }
        if self.categories is not None:
            names, counts = np.unique(self.categories, return_counts=True)
            out["seed_categories"] = {str(k): int(v) for k, v in zip(names, counts, strict=True)}
        return out


def load_data(directory) -> OwnData:
    """Read and validate a platform exported as a folder (see the module docstring).

    Parameters
    ----------
    directory : str or PathLike

    Returns
    -------
    OwnData

    Raises
    ------
    ValidationError
        One line naming the file, the field and what was expected, before any work.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise ValidationError(f"The data folder {directory!r} does not exist or is not a folder.")
    paths = {k: os.path.join(directory, k) for k in DATA_FILES}
    for fname, required in DATA_FILES.items():
        if required and not os.path.isfile(paths[fname]):
            raise bad(paths[fname], "(file)", "present (see the own-data format)", "no such file")
    present = {k: p for k, p in paths.items() if os.path.isfile(p)}
    arrays: dict[str, object] = {}
    arrays["interactions"] = sparse_file(present["interactions.npz"], paths["interactions.npz"])
    for fname in ("follows.npz", "terms.npz", "held_out.npz"):
        if fname in present:
            arrays[fname[:-4]] = sparse_file(present[fname], paths[fname])
    for fname, fields in _FIELDS.items():
        if fname not in present:
            continue
        z = read_npz(present[fname], paths[fname])
        unknown = sorted(set(z) - set(fields))
        if unknown:
            raise bad(
                paths[fname], unknown[0], f"one of the known fields {list(fields)}", "a field"
            )
        arrays.update(z)
    for fname, field in (("seeds.npz", "seeds"), ("evaluation.npz", "abusive")):
        if field not in arrays:
            raise bad(paths[fname], field, "present", "no such field")
    files = dict(paths)
    data = OwnData.from_arrays(**arrays, source=directory, files=files)  # type: ignore[arg-type]
    if "model.npz" in present:
        # The message names factors.npz as the file, not its path, as it always has.
        own_model_needs(
            {**paths, "factors.npz": "factors.npz"},
            model_given=True,
            factors_given=data.user_factors is not None,
            held_out_given=data.held_out is not None,
        )
        model = implicit_model(present["model.npz"], paths["model.npz"], data.n_users, data.n_items)
        data = dataclasses.replace(data, model=model)
    return data


# ---------------------------------------------------------------------------- platform
@dataclass(frozen=True, eq=False)
class DataPlatform:
    """Own data seen the way the audit's walks and metrics see a synthetic :class:`Platform`.

    Candidate-space arrays (``network``, ``vulnerable``, ``benign``) have one entry per
    account; user-space ones (``risky_users``, ``ordinary_users``) one per user. Built by
    :meth:`from_data`, which also splits off the held-out interactions.

    Attributes
    ----------
    data : OwnData
    train : csr_matrix of float32, shape (n_users, n_items)
    held_out : csr_matrix of float32, shape (n_users, n_items)
    risky_users : ndarray of bool, shape (n_users,)
        Users with at least ``risky_share`` of their interactions on seeds or abusive
        accounts (the synthetic platform's buyers); their minors' exposure is a target.
    seed : int
    """

    data: OwnData
    train: sp.csr_matrix
    held_out: sp.csr_matrix
    risky_users: np.ndarray
    seed: int = 0
    risky_share: float = 0.2
    scenario: str = "own-data"

    @classmethod
    def from_data(
        cls, data: OwnData, *, seed: int = 0, risky_share: float = 0.2, max_holdout: int = 3000
    ) -> DataPlatform:
        """Split the held-out interactions (unless given) and find the risky viewers.

        One interaction of each of at most ``max_holdout`` ordinary users with at least
        :data:`MIN_HOLDOUT_INTERACTIONS` interactions is held out (seeded).
        """
        ui = data.interactions
        net = np.zeros(data.n_items, dtype=bool)
        net[data.seeds] = True
        net |= data.abusive
        total = np.asarray(ui.sum(axis=1)).ravel()
        on_net = np.asarray(ui[:, net].sum(axis=1)).ravel()
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(total > 0, on_net / np.maximum(total, 1e-30), 0.0)
        risky = (share >= risky_share) & (on_net > 0)
        if not risky.any():  # no user is that engaged: any interaction makes a viewer risky
            risky = on_net > 0
        if data.held_out is not None:
            return cls(data, ui, data.held_out, risky, seed, risky_share)
        rng = np.random.default_rng(seed)
        counts = np.diff(ui.indptr)
        eligible = np.flatnonzero(~risky & (counts >= MIN_HOLDOUT_INTERACTIONS))
        if eligible.size == 0:
            eligible = np.flatnonzero(counts >= MIN_HOLDOUT_INTERACTIONS)
        if eligible.size > max_holdout:
            eligible = np.sort(rng.choice(eligible, size=max_holdout, replace=False))
        offs = ui.indptr[eligible] + (rng.random(eligible.size) * counts[eligible]).astype(np.int64)
        held = sp.csr_matrix(
            (np.ones(eligible.size, np.float32), (eligible, ui.indices[offs])), shape=ui.shape
        )
        train = ui.copy()
        train.data[offs] = 0.0
        train.eliminate_zeros()
        return cls(data, train, held, risky, seed, risky_share)

    # --- what the walks and metrics read (the names of the synthetic Platform)
    @property
    def n_accounts(self) -> int:
        """Candidate accounts (items)."""
        return self.data.n_items

    @property
    def n_users(self) -> int:
        return self.data.n_users

    @property
    def known_seeds(self) -> np.ndarray:
        return self.data.seeds

    @property
    def network(self) -> np.ndarray:
        """Seeds and known abusive accounts, bool, shape (n_items,)."""
        out = self.data.abusive.copy()
        out[self.data.seeds] = True
        return out

    @property
    def sellers(self) -> np.ndarray:
        """Walk starts: seeds and abusive accounts (indices)."""
        return np.flatnonzero(self.network).astype(np.int64)

    @property
    def vulnerable(self) -> np.ndarray:
        """Minors' accounts, bool, shape (n_items,) (all False without ``minors``)."""
        if self.data.minors is None:
            return np.zeros(self.n_accounts, dtype=bool)
        return self.data.minors

    @property
    def benign(self) -> np.ndarray:
        """Candidates outside the network, bool, shape (n_items,)."""
        return ~self.network

    @property
    def buyers(self) -> np.ndarray:
        """Risky viewers (user indices)."""
        return np.flatnonzero(self.risky_users).astype(np.int64)

    @property
    def ordinary_users(self) -> np.ndarray:
        """Users neither risky nor minors, bool, shape (n_users,)."""
        out = ~self.risky_users
        if self.data.minor_viewers is not None:
            out &= ~self.data.minor_viewers
        return out

    @property
    def flagged_tags(self) -> np.ndarray:
        ft = self.data.flagged_terms
        return np.empty(0, dtype=np.int64) if ft is None else ft

    @property
    def hashtags(self) -> sp.csr_matrix | None:
        return self.data.terms

    @property
    def has_search(self) -> bool:
        """Whether the search-start walk can run (terms and flagged terms given)."""
        return self.data.terms is not None and self.flagged_tags.size > 0

    def search(self, tag: int, *, top: int = 10) -> np.ndarray:
        """Accounts using term ``tag``, most interacted with first (a hashtag search)."""
        terms = self.data.terms
        if terms is None:
            return np.empty(0, dtype=np.int64)
        users = terms.tocsc()[:, int(tag)].nonzero()[0]
        pop = np.asarray(self.train.sum(axis=0)).ravel()
        if self.data.follows is not None:
            pop = pop + np.asarray(self.data.follows.sum(axis=0)).ravel()
        order = np.lexsort((users, -pop[users]))
        return users[order[:top]].astype(np.int64)

    # --- user selections (user space, unlike the synthetic platform's shared id space)
    def evaluation_users(self, *, max_users: int = 3000, seed: int = 0) -> np.ndarray:
        """Non-risky users with held-out interactions (all users if every one is risky)."""
        has = np.diff(self.held_out.indptr) > 0
        users = np.flatnonzero(has & ~self.risky_users)
        if users.size == 0:
            users = np.flatnonzero(has)
        if users.size > max_users:
            users = np.random.default_rng(seed).choice(users, size=max_users, replace=False)
        return np.sort(users).astype(np.int64)

    def ordinary_viewers(self, *, n: int = 20, seed: int = 0) -> np.ndarray:
        """A seeded sample of ordinary users with interactions."""
        pool = np.flatnonzero(self.ordinary_users & (np.diff(self.train.indptr) > 0))
        if pool.size > n:
            pool = np.random.default_rng(seed).choice(pool, size=n, replace=False)
        return np.sort(pool).astype(np.int64)

    def youth_viewers(self, *, n: int = 500, seed: int = 0) -> np.ndarray:
        """Ordinary users who interact with minors' accounts (for the minors' reach)."""
        if self.data.minors is None:
            return np.empty(0, dtype=np.int64)
        touches = np.asarray(self.train[:, self.data.minors].sum(axis=1)).ravel() > 0
        pool = np.flatnonzero(self.ordinary_users & touches)
        if pool.size > n:
            pool = np.sort(np.random.default_rng(seed).choice(pool, size=n, replace=False))
        return pool.astype(np.int64)

    # --- the guard's signals (never the evaluation labels)
    def seed_risk(self) -> np.ndarray:
        """:func:`~guardrails.audit.guards.seed_risk` from the seeds over the follow graph,
        or over the user-account graph (two hops per account step) without one."""
        if self.data.follows is not None:
            return seed_risk(self.data.follows, self.data.seeds)
        n_u, n_i = self.train.shape
        adj = sp.bmat([[None, self.train], [self.train.T, None]], format="csr")
        return seed_risk(adj, n_u + self.data.seeds)[n_u:]

    def policy_signals(self) -> dict:
        """Keyword arguments of :func:`guardrails.default_policy` from what was given."""
        d = self.data
        out: dict = {"seeds": d.seeds, "interactions": self.train, "n_items": d.n_items}
        if d.follows is not None:
            out["graph"] = d.follows
        if self.has_search:
            out["account_terms"] = d.terms
            out["seed_terms"] = d.flagged_terms
        if d.minors is not None:
            out["minors"] = d.minors
        if d.minor_viewers is not None:
            out["minor_viewers"] = d.minor_viewers
        return out

    def policy_data(self, risk: np.ndarray) -> dict:
        """Arrays a policy file may reference by name (never the evaluation labels)."""
        d = self.data
        seeds_mask = np.zeros(d.n_items, dtype=bool)
        seeds_mask[d.seeds] = True
        out: dict = {
            "seeds": d.seeds,
            "known_seeds": d.seeds,
            "seed_mask": seeds_mask,
            "risk": risk,
            "interactions": self.train,
        }
        if d.follows is not None:
            out["graph"] = d.follows
        if d.minors is not None:
            out["minors"] = d.minors
        if d.minor_viewers is not None:
            out["minor_viewers"] = d.minor_viewers
        if self.has_search:
            out["flagged_terms"] = out["flagged_tags"] = d.flagged_terms
            out["terms"] = d.terms
        if d.categories is not None:
            for c in np.unique(d.categories):
                out[f"seeds_{c}"] = d.seeds[d.categories == c]
        return out

    def summary(self) -> dict:
        """Counts, JSON-ready, with the names the report's table and plots read."""
        out = self.data.summary()
        out.update(
            {
                "scenario": self.scenario,
                "seed": self.seed,
                "n_accounts": self.n_accounts,
                "n_risky_viewers": int(self.risky_users.sum()),
                "risky_share": self.risky_share,
                "n_train": int(self.train.nnz),
                "n_held_out": int(self.held_out.nnz),
                "search_walk": self.has_search,
            }
        )
        return out
