"""Controls for the DP claim: ER, BA and WS with constants chosen so that their expected mean degree
equals DP's at the same vertex count (issue 23 item 4).

At RandWire's constants the generators' CS orders ER > BA > WS > DP, as their mean degree does
(ER p = 0.2 on 40 vertices: degree 7.8; BA m = 5: 8.8; WS k = 4: 4; DP at the default Eq. 1
constants: ~2). If DP's lower score were only its sparsity, an ER/BA/WS graph just as sparse would
score as well; these controls test that.

Expected mean degree 2|E|/N of each generator (exact, from its construction):
- ER(p): p (N - 1);
- BA(m) (networkx: a star on m + 1 vertices, then N - m - 1 vertices with m edges each): 2 m (N - m) / N;
- WS(k, p): k (rewiring moves edges, it never adds or removes them);
- DP: sum over ring distances of Eq. 1 (:func:`repshare.concurrency.graphs.expected_dp_degree`).
BA's m and WS's k are integers (k even), so they match DP's degree to the nearest value they can take;
the table of constants used (with the degree each reaches) is written beside the rows.
"""

from __future__ import annotations

from dataclasses import replace

from repshare.concurrency.graphs import GeneratorParams, expected_dp_degree

CONTROL_SUFFIX = "_matched"
MATCHABLE = ("er", "ba", "ws")


def control_name(generator: str) -> str:
    return generator + CONTROL_SUFFIX


def is_control(name: str) -> bool:
    return name.endswith(CONTROL_SUFFIX)


def base_generator(name: str) -> str:
    """'er_matched' -> 'er' (a plain generator name is returned as is)."""
    g = name.removesuffix(CONTROL_SUFFIX)
    if g not in MATCHABLE:
        raise ValueError(f"control {name!r}: only {', '.join(MATCHABLE)} can be matched to DP's mean degree")
    return g


def expected_degree(generator: str, n_vertices: int, params: GeneratorParams) -> float:
    """Expected mean degree 2|E|/N of one generator at ``params`` (module docstring)."""
    if generator == "er":
        return params.er_p * (n_vertices - 1)
    if generator == "ba":
        return 2.0 * params.ba_m * (n_vertices - params.ba_m) / n_vertices
    if generator == "ws":
        return float(params.ws_k)
    if generator == "dp":
        return expected_dp_degree(n_vertices, params.dp_alpha, params.dp_beta, params.dp_p)
    raise ValueError(f"unknown generator {generator!r}")


def degree_matched_params(generator: str, n_vertices: int, params: GeneratorParams) -> tuple[GeneratorParams, dict]:
    """``params`` with ``generator``'s constant set so its expected mean degree is DP's at ``n_vertices``.

    Returns the new constants and a row saying which constant was set, to what, and the degree reached."""
    g = base_generator(generator)
    target = expected_degree("dp", n_vertices, params)
    if g == "er":
        new = replace(params, er_p=min(1.0, target / (n_vertices - 1)))
        key, value = "er_p", new.er_p
    elif g == "ba":
        m = min(range(1, n_vertices), key=lambda m: (abs(2.0 * m * (n_vertices - m) / n_vertices - target), m))
        new = replace(params, ba_m=m)
        key, value = "ba_m", m
    else:
        evens = range(2, n_vertices, 2)
        if not evens:
            raise ValueError(f"WS needs an even k below the vertex count {n_vertices}")
        k = min(evens, key=lambda k: (abs(k - target), k))
        new = replace(params, ws_k=k)
        key, value = "ws_k", k
    return new, {"param": key, "value": value, "dp_mean_degree": target,
                 "mean_degree": expected_degree(g, n_vertices, new)}
