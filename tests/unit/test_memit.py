"""MEMIT, AlphaEdit and EMMET: the closed-form updates on hand-built cases, the layer loop on
tiny models (the normed-MLP-output architectures included), chunked z equal to one chunk."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from factedit.delta import AppliedDeltas, compact_factors
from factedit.methods.alphaedit import AlphaEditSolver
from factedit.methods.emmet import EmmetSolver
from factedit.methods.hparams import AlphaEditHParams, EmmetHParams, MemitHParams, RomeHParams
from factedit.methods.keys import compute_keys, residual_at_subject
from factedit.methods.memit import MemitSolver, update_weight
from factedit.methods.mlp_out import output_change, weight_space_residuals
from factedit.methods.spread import Targets, compute_targets, spread_over_layers
from factedit.methods.state import MethodState, null_space_projector
from factedit.methods.templates import template_weights
from factedit.spec import EditRequest

FACTS = [
    EditRequest(subject="Eiffel Tower", prompt="The {} is in", target_new="Rome"),
    EditRequest(subject="Michael Jordan", prompt="{} plays", target_new="chess"),
    EditRequest(subject="the iPhone", prompt="{} is made by", target_new="Nokia"),
]
#: one template ("{}"), so a key is exactly the bare prompt's key
BARE = {"context_template_lengths": (), "mom2_n_tokens": 1_500}


def _spd(d: int, seed: int, spectrum: torch.Tensor | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    values = (
        spectrum if spectrum is not None else torch.rand(d, generator=g, dtype=torch.float64) + 0.1
    )
    return q @ torch.diag(values) @ q.T


def _state(hp, C: torch.Tensor, layer: int = 0) -> MethodState:
    return MethodState(hp, statistics={layer: C})


def test_memit_one_fact_one_layer_is_the_closed_form_least_squares_update():
    """ΔW = r Sᵀ minimises ‖ΔW k − r‖² + λ tr(ΔW C ΔWᵀ): the Sherman-Morrison closed form
    r kᵀ(λC)⁻¹ / (1 + kᵀ(λC)⁻¹k), and the objective's gradient vanishes there."""
    d_in, d_out, lam = 6, 4, 3.0
    C = _spd(d_in, 0)
    g = torch.Generator().manual_seed(1)
    k = torch.randn(d_in, 1, generator=g, dtype=torch.float64)
    r = torch.randn(d_out, 1, generator=g, dtype=torch.float64)
    right, info = MemitSolver().right(None, 0, k, _state(MemitHParams(mom2_update_weight=lam), C))
    delta = r @ right.T
    u = torch.linalg.solve(lam * C, k)
    expected = r @ u.T / (1 + float(k.T @ u))
    assert torch.allclose(delta, expected, atol=1e-12)
    gradient = 2 * (delta @ k - r) @ k.T + 2 * lam * delta @ C
    assert float(gradient.abs().max()) < 1e-10
    assert info["lambda"] == lam and info["lambda_rule"] == "mom2_update_weight given"


def test_lambda_rule_is_the_input_width():
    assert update_weight(MemitHParams(), 2048) == (2048.0, update_weight(MemitHParams(), 1)[1])
    assert update_weight(MemitHParams(mom2_update_weight=15000), 2048)[0] == 15000.0


def test_emmet_meets_the_constraints_as_lambda_vanishes():
    """λ → 0: ΔW K = R for every key of the batch."""
    d_in, n = 8, 3
    C = _spd(d_in, 2)
    g = torch.Generator().manual_seed(3)
    K = torch.randn(d_in, n, generator=g, dtype=torch.float64)
    R = torch.randn(5, n, generator=g, dtype=torch.float64)
    right, _ = EmmetSolver().right(None, 0, K, _state(EmmetHParams(emmet_lambda=1e-9), C))
    assert torch.allclose((R @ right.T) @ K, R, atol=1e-6)


def _null_space_case(d: int = 12, null: int = 6, seed: int = 4):
    """C with 6 large and 6 tiny eigenvalues; keys K₀ of the preserved (large) directions."""
    spectrum = torch.cat([torch.full((null,), 1e-6), torch.linspace(1.0, 2.0, d - null)])
    spectrum = spectrum.double()
    C = _spd(d, seed, spectrum)
    _eigvals, eigvecs = torch.linalg.eigh(C)
    preserved = eigvecs[:, null:]
    g = torch.Generator().manual_seed(seed + 1)
    K0 = preserved @ torch.randn(d - null, 50, generator=g, dtype=torch.float64)
    return C, K0, g


def test_null_space_projector_rule_is_scale_free():
    C, _, _ = _null_space_case()
    P, info = null_space_projector(C, 0.01)
    P_scaled, info_scaled = null_space_projector(1e4 * C, 0.01)
    assert info["null_dim"] == info_scaled["null_dim"] == 6
    assert torch.allclose(P, P_scaled, atol=1e-8)
    assert torch.allclose(P @ P, P, atol=1e-10)


def test_projected_update_leaves_preserved_and_earlier_keys_unchanged():
    """‖ΔW K₀‖ ≈ 0 for the keys C preserves; with the earlier edits' keys K_p in the state,
    ‖ΔW K_p‖ ≈ 0 too, while the new keys get their residual."""
    C, K0, g = _null_space_case()
    K1 = torch.randn(12, 2, generator=g, dtype=torch.float64)
    Kp = torch.randn(12, 3, generator=g, dtype=torch.float64)
    R = torch.randn(5, 2, generator=g, dtype=torch.float64)
    state = _state(AlphaEditHParams(nullspace_energy=0.01, l2=1e-7), C)
    state.sequential.grams[0] = Kp @ Kp.T
    right, info = AlphaEditSolver().right(None, 0, K1, state)
    delta = R @ right.T
    assert info["null_dim"] == 6
    assert float((delta @ K0).norm()) < 1e-6 * float(delta.norm() * K0.norm())
    assert float((delta @ Kp).norm()) < 1e-4 * float((delta @ K1).norm())
    assert torch.allclose(delta @ K1, R, atol=1e-4)
    # without the earlier keys in the state they are moved
    free, _ = AlphaEditSolver().right(None, 0, K1, _state(AlphaEditHParams(l2=1e-7), C))
    assert float(((R @ free.T) @ Kp).norm()) > 1e-2 * float((R @ free.T @ K1).norm())


def test_leak_weight_solves_the_projected_objective_with_the_corpus_term():
    """μ > 0: Δ = ΔP minimises ‖ΔK − R‖² + ‖ΔK_p‖² + μλ tr(ΔCΔᵀ) + α‖Δ‖² over P's range (the
    gradient vanishes there), and it moves the corpus keys' outputs less than μ = 0 does."""
    d = 12
    spectrum = torch.cat([torch.linspace(1e-3, 5e-2, 6), torch.linspace(1.0, 2.0, 6)]).double()
    C = _spd(d, 7, spectrum)
    g = torch.Generator().manual_seed(8)
    K1 = torch.randn(d, 2, generator=g, dtype=torch.float64)
    Kp = torch.randn(d, 3, generator=g, dtype=torch.float64)
    R = torch.randn(5, 2, generator=g, dtype=torch.float64)

    def solve(mu: float):
        hp = AlphaEditHParams(nullspace_energy=0.05, l2=0.1, leak_weight=mu)
        state = _state(hp, C)
        state.sequential.grams[0] = Kp @ Kp.T
        right, info = AlphaEditSolver().right(None, 0, K1, state)
        return R @ right.T, info, state

    delta, info, state = solve(4.0)
    P, _ = state.projector(None, 0)
    lam = info["lambda"]
    assert lam == d and info["leak_weight"] == 4.0
    alpha = info["alpha"]
    gradient = (delta @ K1 - R) @ K1.T + delta @ Kp @ Kp.T + 4.0 * lam * delta @ C + alpha * delta
    assert float((gradient @ P).abs().max()) < 1e-9
    assert torch.allclose(delta @ P, delta, atol=1e-10)
    paper, paper_info, _ = solve(0.0)
    assert "lambda" not in paper_info and paper_info["leak_weight"] == 0.0
    corpus_change = lambda D: float(torch.trace(D @ C @ D.T))  # noqa: E731
    assert corpus_change(delta) < 0.6 * corpus_change(paper)


def test_compact_factors_keep_the_update():
    g = torch.Generator().manual_seed(0)
    left, right = torch.randn(4, 9, generator=g), torch.randn(6, 9, generator=g)
    small_left, small_right = compact_factors(left, right)
    assert small_left.shape[1] == 4
    assert torch.allclose(small_left @ small_right.T, left @ right.T, atol=1e-5)


@pytest.fixture
def memit_state(corpus_path):
    def make(**overrides) -> MethodState:
        hp = MemitHParams.from_overrides({**BARE, "v_num_grad_steps": 6, **overrides})
        return MethodState(hp, corpus=[corpus_path], n_tokens=1_500)

    return make


def test_chunked_z_equals_one_chunk(tiny, memit_state):
    lm = tiny("llama")
    state = memit_state()
    templates = context_templates_of(lm, state)
    whole = compute_targets(lm, FACTS, 2, templates, state.hparams, use_cache=False)
    chunked = compute_targets(
        lm,
        FACTS,
        2,
        templates,
        dataclasses.replace(state.hparams, z_batch_facts=1),
        use_cache=False,
    )
    assert torch.allclose(whole.z, chunked.z, atol=1e-4, rtol=1e-4)
    assert float((whole.z - whole.z_orig).norm()) > 0


def context_templates_of(lm, state: MethodState) -> list[str]:
    return state.templates(lm)


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gemma3_text"])
def test_single_layer_with_vanishing_lambda_writes_z_exactly(tiny, memit_state, model_type):
    """One fact, one layer, λ → 0, the bare template only: after the update the residual
    stream at the subject's last token is z (up to the norm's radial part on Gemma)."""
    lm = tiny(model_type)
    state = memit_state(mom2_update_weight=1e-6)
    fact = FACTS[:1]
    z_orig = residual_at_subject(lm, fact, 1)
    step = 0.05 * z_orig.norm() * torch.nn.functional.normalize(torch.randn_like(z_orig), dim=-1)
    targets = Targets(z_orig + step, z_orig)
    (delta,) = spread_over_layers(lm, fact, [1], targets, state, MemitSolver())
    with AppliedDeltas(lm.model) as applied:
        applied.add(delta)
        z_now = residual_at_subject(lm, fact, 1)
    # a normed MLP output has a fixed length: a step of 11% of it is met up to ~6% (radial)
    tolerance = 0.1 if lm.arch.mlp_output_is_normed() else 0.01
    assert float((z_now - targets.z).norm()) < tolerance * float(step.norm())
    assert delta.meta["share_reached_mean"] == pytest.approx(1.0, abs=tolerance)


def test_template_weights_follow_the_references():
    """MEMIT's keys (kmeng01/memit ``compute_ks``): the mean over context types — the bare
    prompt, then each prefix length — of the mean within each; ROME's k*: every template alike."""
    assert torch.allclose(template_weights((10,), 5, "by_type"), torch.tensor([0.5] + [0.1] * 5))
    two_lengths = template_weights((5, 10), 10, "by_type")
    assert two_lengths.shape == (21,) and float(two_lengths.sum()) == pytest.approx(1.0)
    assert float(two_lengths[0]) == pytest.approx(1 / 3)
    assert torch.allclose(two_lengths[1:], torch.full((20,), 1 / 30))
    assert torch.allclose(template_weights((5, 10), 10, "uniform"), torch.full((21,), 1 / 21))
    assert MemitHParams().key_template_mean == "by_type"
    assert RomeHParams().key_template_mean == "uniform"


@pytest.mark.parametrize("mean", ["by_type", "uniform"])
def test_memit_update_reads_the_key_its_template_mean_names(tiny, memit_state, mean):
    """One fact, one layer: ΔW = r kᵀ(λC + k kᵀ)⁻¹ reads its input along C⁻¹k, and k is
    ½ k_bare + ½ mean(k_prefix) by type (the reference), the plain mean when uniform."""
    lm = tiny("llama")
    state = memit_state(
        context_template_lengths=(3,), context_templates_per_length=3, key_template_mean=mean
    )
    templates = state.templates(lm)
    fact, layer = FACTS[:1], 1
    each = torch.cat([compute_keys(lm, fact, layer, [t]) for t in templates]).double()
    by_type = 0.5 * each[0] + 0.5 * each[1:].mean(0)
    keys = {"by_type": by_type, "uniform": each.mean(0)}
    z_orig = residual_at_subject(lm, fact, layer)
    targets = Targets(z_orig * 1.05, z_orig)
    (delta,) = spread_over_layers(lm, fact, [layer], targets, state, MemitSolver())
    C = state.second_moment(lm, layer).double()
    direction = delta.right[:, 0].double()  # Linear [d_out, d_in]: right is the input side
    cos = {
        name: abs(float(torch.nn.functional.cosine_similarity(direction, C.inverse() @ k, dim=0)))
        for name, k in keys.items()
    }
    other = "uniform" if mean == "by_type" else "by_type"
    assert cos[mean] > 1 - 1e-6
    assert cos[other] < 0.99  # the two means differ enough here to tell them apart
    assert delta.meta["key_template_mean"] == mean


def _mlp_block_output(lm, request: EditRequest, layer: int) -> torch.Tensor:
    """What layer ``layer``'s MLP adds to the residual stream at the last subject token [d]."""
    from factedit.hooks import Trace
    from factedit.methods.value import rewrite_prompts

    (prompt,) = rewrite_prompts(lm, request, ["{}"])
    name = f"{lm.arch.layer_name(layer)}.{lm.arch.paths.mlp_out_norm}"
    with torch.no_grad(), Trace(lm.model, name) as tr:
        lm.model(input_ids=torch.tensor([prompt.input_ids]))
    return tr.output[0, prompt.last_subject_index].double()


@pytest.mark.parametrize("model_type", ["gemma3_text", "gemma2"])
def test_normed_mlp_output_each_layer_reaches_its_share(tiny, memit_state, model_type):
    """Where the MLP output is normalised before the residual add, every edited layer moves
    the residual stream by its share (z − z_cur) / (layers left), measured by a forward pass
    (these tiny models' MLP outputs are small enough for the norm's ε to matter, so the
    share is met exactly, radial part included); ignoring the norm (writing the share into
    W k itself) misses it badly."""
    lm = tiny(model_type)
    state = memit_state(mom2_update_weight=1e-6)
    fact, layers = FACTS[:1], [1, 2]
    z_orig = residual_at_subject(lm, fact, layers[-1])
    step = 0.05 * z_orig.norm() * torch.nn.functional.normalize(torch.randn_like(z_orig), dim=-1)
    targets = Targets(z_orig + step, z_orig)
    deltas = spread_over_layers(lm, fact, layers, targets, state, MemitSolver())
    with AppliedDeltas(lm.model) as applied:
        for i, (layer, delta) in enumerate(zip(layers, deltas, strict=True)):
            share = ((targets.z - residual_at_subject(lm, fact, layers[-1])) / (len(layers) - i))[0]
            before = _mlp_block_output(lm, fact[0], layer)
            applied.add(delta)
            moved = _mlp_block_output(lm, fact[0], layer) - before
            cos = torch.nn.functional.cosine_similarity(moved, share.double(), dim=0)
            assert float(cos) > 0.99, (layer, float(cos))
            assert float(moved.norm() / share.norm()) == pytest.approx(1.0, abs=0.05)
            assert delta.meta["share_reached_mean"] == pytest.approx(1.0, abs=0.05)
    # the naive residual (no norm handling) at the first layer
    keys = compute_keys(lm, fact, layers[0], ["{}"])
    share0 = step / len(layers)
    naive = output_change(lm, layers[0], keys, _exact_update(keys, share0.double()))
    mapped = output_change(
        lm,
        layers[0],
        keys,
        _exact_update(keys, weight_space_residuals(lm, layers[0], keys, share0)),
    )
    reach = lambda moved: float((moved * share0).sum() / share0.pow(2).sum())  # noqa: E731
    assert reach(mapped) > 0.8
    assert abs(reach(naive) - 1.0) > 0.5


def _exact_update(keys: torch.Tensor, residual_w: torch.Tensor) -> torch.Tensor:
    """The minimum-norm ΔW [d_out, d_in] with ΔW k = r for one key (Linear orientation)."""
    k = keys.double()[0]
    return residual_w.double()[0][:, None] @ (k / k.dot(k))[None]


class _GemmaNorm(torch.nn.Module):
    """Gemma's RMS norm, (1 + w) ⊙ x / sqrt(mean(x²) + ε), with one large gain."""

    def __init__(self, width: int, big: float = 300.0) -> None:
        super().__init__()
        self.eps = 1e-6
        self.weight = torch.nn.Parameter(torch.zeros(width))
        with torch.no_grad():
            self.weight[0] = big

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * (1 + self.weight)


def test_projection_onto_the_norm_image_keeps_the_large_gain_coordinate():
    """A target off the norm's image is projected in output space: the result is on the image
    (rms(u) = 1) and no point of the image is closer; the coordinate written through the
    large gain (a massive activation) moves far less than under the u-space rescaling."""
    from factedit.methods.mlp_out import _onto_image, rms_gain

    norm = _GemmaNorm(16).requires_grad_(False)
    gain = rms_gain(norm, 16, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    v = torch.randn(1, 16, generator=g, dtype=torch.float64)
    output = norm(v).double()
    target = output + 0.3 * torch.randn(1, 16, generator=g, dtype=torch.float64)
    u = _onto_image(target, gain)
    assert float(u.pow(2).mean()) == pytest.approx(1.0, abs=1e-9)
    best = float((gain * u - target).norm())
    for _ in range(200):  # random points of the image are never closer
        w = u + 0.05 * torch.randn(1, 16, generator=g, dtype=torch.float64)
        w = w / w.pow(2).mean().sqrt()
        assert float((gain * w - target).norm()) >= best - 1e-9
    rescaled = target / gain
    rescaled = rescaled / rescaled.pow(2).mean().sqrt()
    moved = lambda u_: float((gain * u_ - output)[0, 0].abs())  # noqa: E731
    assert moved(u) < 0.2 * moved(rescaled)


def test_z_cache_resumes_an_interrupted_batch_and_never_serves_another_model(
    tiny, memit_state, tmp_path, monkeypatch
):
    import factedit.methods.spread as spread

    monkeypatch.setenv("FACTEDIT_HOME", str(tmp_path))
    lm = tiny("llama")
    state = memit_state(z_batch_facts=1)
    templates = state.templates(lm)
    real, calls = spread.optimise_values, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(spread, "optimise_values", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compute_targets(lm, FACTS, 2, templates, state.hparams)
    monkeypatch.setattr(spread, "optimise_values", real)
    counted = []
    monkeypatch.setattr(
        spread, "optimise_values", lambda *a, **k: counted.append(1) or real(*a, **k)
    )
    resumed = compute_targets(lm, FACTS, 2, templates, state.hparams)
    assert len(counted) == 2, "the first fact's z came from the cache"
    fresh = compute_targets(lm, FACTS, 2, templates, state.hparams, use_cache=False)
    assert torch.allclose(resumed.z, fresh.z, atol=1e-5)
    with AppliedDeltas(lm.model) as applied:  # another model state: no hits
        from factedit.testing import small_delta

        applied.add(small_delta(lm, layer=1, scale=1e-2))
        counted.clear()
        compute_targets(lm, FACTS, 2, templates, state.hparams)
        assert len(counted) == 3


def test_z_chunks_group_facts_by_suffix_length(tiny, memit_state, monkeypatch):
    """Facts whose rows run equally many tokens above the hook site share a forward pass
    (rows are padded to the longest suffix), whatever their order; the z are unchanged."""
    import factedit.methods.spread as spread
    from factedit.methods.value import suffix_length

    lm = tiny("llama")
    facts = [
        EditRequest(subject="Eiffel Tower", prompt="{} is in", target_new="Rome"),
        EditRequest(subject="Michael Jordan", prompt="{} plays the game of", target_new="chess"),
        EditRequest(subject="the iPhone", prompt="{} is made by", target_new="Nokia"),
        EditRequest(subject="Kyoto", prompt="{} lies in the country of", target_new="Peru"),
    ]
    lengths = [suffix_length(lm, f) for f in facts]
    assert lengths[0] < lengths[1] and lengths[2] < lengths[3], lengths
    state = memit_state(z_batch_facts=2)
    real, passes = spread.optimise_values, []

    def recording(lm_, batch, *args, **kwargs):
        passes.append(sorted(len(r) - s for r, s in zip(batch.rows, batch.split, strict=True)))
        return real(lm_, batch, *args, **kwargs)

    monkeypatch.setattr(spread, "optimise_values", recording)
    templates = context_templates_of(lm, state)
    grouped = compute_targets(lm, facts, 2, templates, state.hparams, use_cache=False)
    longest = [max(p) for p in passes]
    assert longest == sorted(longest) and longest[0] < longest[1]
    one_by_one = [
        compute_targets(lm, [f], 2, templates, state.hparams, use_cache=False).z for f in facts
    ]
    assert torch.allclose(grouped.z, torch.cat(one_by_one), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("model_type", ["gemma3_text", "llama"])
def test_second_window_pass_delivers_what_the_first_left(tiny, memit_state, model_type):
    """window_passes 2: one delta per layer, the sum of both passes' updates (applying it
    reaches z exactly as far as recorded), and z is reached further than after one pass."""
    lm = tiny(model_type)
    state = memit_state(window_passes=2)
    facts, layers = FACTS, [1, 2]
    z_orig = residual_at_subject(lm, facts, layers[-1])
    g = torch.Generator().manual_seed(3)
    step = (
        0.3
        * z_orig.norm(dim=-1, keepdim=True)
        * torch.nn.functional.normalize(torch.randn(z_orig.shape, generator=g), dim=-1)
    )
    targets = Targets(z_orig + step, z_orig)
    deltas = spread_over_layers(lm, facts, layers, targets, state, MemitSolver())
    assert [d.meta["layer"] for d in deltas] == layers
    first, second = deltas[0].meta["z_reached_by_pass"]
    assert second > first + 0.02, (first, second)
    with AppliedDeltas(lm.model) as applied:
        for delta in deltas:
            applied.add(delta)
        got = (residual_at_subject(lm, facts, layers[-1]) - z_orig).double()
    reached = float(((got * step.double()).sum(-1) / step.double().pow(2).sum(-1)).mean())
    assert reached == pytest.approx(second, abs=1e-3)
    assert deltas[0].meta["z_reached_mean"] == second
    assert deltas[0].meta["relative_norm"] == pytest.approx(
        float(deltas[0].dense().norm()) / deltas[0].meta["weight_norm"]
    )
