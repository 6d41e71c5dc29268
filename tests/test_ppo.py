"""PPO math: hand-computed GAE, loop-vs-vectorized equivalence, clipped losses, KL estimators, registry."""

import math

import pytest
import torch

from deepresearch.rl.ppo import (
    ADVANTAGE_ESTIMATORS,
    AdvantageEstimator,
    entropy_from_logits,
    explained_variance,
    gae,
    gae_reference,
    get_advantage_estimator,
    kl_penalty,
    leave_one_out_baseline,
    masked_mean,
    masked_whiten,
    policy_loss,
    register_advantage_estimator,
    terminal_rewards,
    token_logprobs,
    value_loss,
)

X = 123.0  # a value on a non-policy token: must never influence anything


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# GAE by hand


def test_gae_gamma_lambda_one_is_reward_to_go_minus_value():
    # Row 0: [prompt, a1, a2, obs, obs, a3], reward 1 on the last policy token.
    #   returns on policy tokens = sum of future rewards = 1, 1, 1
    #   advantages = return - value = 1-0.5, 1-0.2, 1-0.1 = 0.5, 0.8, 0.9
    # Row 1: three policy tokens then padding, rewards 0.2, 0, 1.
    #   returns = 1.2, 1.0, 1.0 ; advantages = 1.2-0.1, 1.0-0.4, 1.0-0.6 = 1.1, 0.6, 0.4
    mask = t([[0, 1, 1, 0, 0, 1], [1, 1, 1, 0, 0, 0]])
    values = t([[X, 0.5, 0.2, X, X, 0.1], [0.1, 0.4, 0.6, X, X, X]])
    rewards = t([[0, 0, 0, 0, 0, 1], [0.2, 0, 1, 0, 0, 0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert torch.allclose(adv, t([[0, 0.5, 0.8, 0, 0, 0.9], [1.1, 0.6, 0.4, 0, 0, 0]]))
    assert torch.allclose(ret, t([[0, 1, 1, 0, 0, 1], [1.2, 1.0, 1.0, 0, 0, 0]]))


def test_gae_discounted_hand_example_skips_observations():
    # gamma = 0.9, lam = 0.8 (gamma*lam = 0.72); policy tokens at t = 1, 3, 4 with V = 0.5, 0.4, 0.2;
    # the observation at t = 2 is skipped (t = 1 and t = 3 are consecutive steps); reward 1 at t = 4.
    #   t=4: delta = 1 + 0.9*0   - 0.2 =  0.8   ; A = 0.8                          ; R = 1.0
    #   t=3: delta = 0 + 0.9*0.2 - 0.4 = -0.22  ; A = -0.22 + 0.72*0.8   = 0.356    ; R = 0.756
    #   t=1: delta = 0 + 0.9*0.4 - 0.5 = -0.14  ; A = -0.14 + 0.72*0.356 = 0.11632  ; R = 0.61632
    mask = t([[0, 1, 0, 1, 1, 0]])
    values = t([[X, 0.5, X, 0.4, 0.2, X]])
    rewards = t([[0, 0, 0, 0, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    assert torch.allclose(adv, t([[0, 0.11632, 0, 0.356, 0.8, 0]]))
    assert torch.allclose(ret, t([[0, 0.61632, 0, 0.756, 1.0, 0]]))
    ref_adv, ref_ret = gae_reference(rewards, values, mask, 0.9, 0.8)
    assert torch.allclose(adv, ref_adv) and torch.allclose(ret, ref_ret)


def test_gae_rewards_on_observation_tokens_are_ignored():
    mask = t([[1, 0, 1]])
    values = t([[0.3, X, 0.1]])
    a1, _ = gae(t([[0, 5.0, 1]]), values, mask, 1.0, 1.0)
    a2, _ = gae(t([[0, 0.0, 1]]), values, mask, 1.0, 1.0)
    assert torch.equal(a1, a2)


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.9, 0.8), (0.99, 0.95), (0.5, 0.0), (0.0, 1.0)])
def test_gae_vectorized_matches_loop_on_random_masked_batches(gamma, lam):
    g = torch.Generator().manual_seed(0)
    B, T = 7, 50
    values = torch.randn(B, T, generator=g, dtype=torch.float64)
    # segments of policy and observation tokens, then padding; one row has no policy token at all
    mask = (torch.rand(B, T, generator=g) < 0.55).double()
    mask[2] = 0
    mask[3, 30:] = 0
    rewards = torch.randn(B, T, generator=g, dtype=torch.float64) * mask
    adv, ret = gae(rewards, values, mask, gamma, lam)
    ref_adv, ref_ret = gae_reference(rewards, values, mask, gamma, lam)
    assert torch.allclose(adv, ref_adv, atol=1e-12)
    assert torch.allclose(ret, ref_ret, atol=1e-12)
    assert torch.all(adv[mask == 0] == 0) and torch.all(ret[mask == 0] == 0)
    if gamma == 1.0 and lam == 1.0:  # closed form: A_t = sum_{j >= t} r_j - V_t over policy tokens
        to_go = torch.flip(torch.cumsum(torch.flip(rewards, [1]), 1), [1])
        assert torch.allclose(adv, (to_go - values) * mask, atol=1e-12)


def test_reinforce_is_reward_to_go():
    mask = t([[1, 0, 1, 1]])
    rewards = t([[0, 0, 0.5, 1]])
    adv, ret = get_advantage_estimator("reinforce")(rewards, t([[9, 9, 9, 9]]), mask, 0.5, 0.3)
    # gamma 0.5 per policy step: t=3: 1 ; t=2: 0.5 + 0.5*1 = 1.0 ; t=0: 0 + 0.5*1.0 = 0.5
    assert torch.allclose(adv, t([[0.5, 0, 1.0, 1.0]])) and torch.equal(adv, ret)


def test_leave_one_out_baseline_is_the_mean_of_the_tasks_other_samples():
    rewards = t([1, 0, 0, 0, 1, 1, 0, 1, 0.5, -0.2])
    groups = torch.tensor([0, 0, 0, 0, 2, 2, 2, 2, 1, 1])  # group ids need not be contiguous in order
    base = leave_one_out_baseline(rewards, groups)
    assert torch.allclose(base, t([0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1, 2 / 3, -0.2, 0.5]))
    centered = rewards - base
    for g in groups.unique():
        assert float(centered[groups == g].sum()) == pytest.approx(0.0, abs=1e-12)
    # a task whose samples all earned the same carries no signal: every centered reward is 0
    assert torch.equal(leave_one_out_baseline(t([1, 1, 1]), torch.tensor([0, 0, 0])), t([1, 1, 1]))
    with pytest.raises(ValueError, match="one episode"):
        leave_one_out_baseline(t([1, 0, 1]), torch.tensor([0, 0, 1]))


def test_terminal_rewards_on_last_policy_token():
    mask = t([[0, 1, 1, 0, 1, 0], [1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    out = terminal_rewards(t([2.0, -1.0, 7.0]), mask)
    assert torch.equal(out, t([[0, 0, 0, 0, 2, 0], [0, -1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]))


# ---------------------------------------------------------------------------------------------
# losses by hand


def test_policy_loss_hand_values_with_clipping_engaged():
    # eps = 0.2; per token: max(-A*rho, -A*clip(rho, 0.8, 1.2))
    #   rho 1.5, A +1: unclipped -1.5, clipped -1.2 -> -1.2 (clip active)
    #   rho 0.5, A +1: unclipped -0.5, clipped -0.8 -> -0.5 (clip inactive)
    #   rho 0.5, A -2: unclipped  1.0, clipped  1.6 ->  1.6 (clip active)
    #   rho 3.0, A +5: masked out
    # loss = (-1.2 - 0.5 + 1.6) / 3 = -0.0333..., clip_frac = 2/3
    ratio = t([[1.5, 0.5, 0.5, 3.0]])
    adv = t([[1.0, 1.0, -2.0, 5.0]])
    mask = t([[1, 1, 1, 0]])
    logp = torch.log(ratio).requires_grad_(True)
    loss, clip_frac = policy_loss(logp, torch.zeros_like(logp), adv, mask, clip_eps=0.2)
    assert loss.item() == pytest.approx(-0.1 / 3)
    assert clip_frac.item() == pytest.approx(2 / 3)
    loss.backward()
    # only the unclipped token carries a gradient: d/dlogp (-A * rho) / 3 = -1 * 0.5 / 3
    assert torch.allclose(logp.grad, t([[0, -0.5 / 3, 0, 0]]))


def test_policy_loss_at_ratio_one_is_minus_mean_advantage():
    adv = t([[0.3, -0.1, 2.0]])
    mask = t([[1, 1, 0]])
    logp = t([[-1.0, -2.0, -3.0]])
    loss, clip_frac = policy_loss(logp, logp, adv, mask, clip_eps=0.2)
    assert loss.item() == pytest.approx(-(0.3 - 0.1) / 2) and clip_frac.item() == 0.0


def test_value_loss_hand_values_with_clipping_engaged():
    # eps = 0.2
    #   old 0.0, V 0.5, R  1.0: unclipped (0.5-1)^2 = 0.25, V_clip 0.2 -> (0.2-1)^2 = 0.64 -> 0.64
    #   old 0.0, V 0.1, R -1.0: unclipped (1.1)^2 = 1.21, V_clip 0.1 -> 1.21            -> 1.21
    #   third token masked
    # loss = 0.5 * (0.64 + 1.21) / 2 = 0.4625
    values = t([[0.5, 0.1, 9.0]]).requires_grad_(True)
    loss = value_loss(values, t([[0.0, 0.0, 0.0]]), t([[1.0, -1.0, 0.0]]), t([[1, 1, 0]]), clip_eps=0.2)
    assert loss.item() == pytest.approx(0.4625)
    loss.backward()
    # token 1: the clipped branch wins and V_clip is constant in V (clamped) -> zero gradient
    # token 2: d/dV 0.5 * (V-R)^2 / 2 = (0.1 + 1) / 2 = 0.55
    assert torch.allclose(values.grad, t([[0.0, 0.55, 0.0]]))


def test_kl_estimators_hand_values():
    # pi(a) = 0.5, pi_ref(a) = 0.25: log r = log(0.25/0.5) = -ln 2
    #   k1 = ln 2 = 0.693147 ; k2 = 0.5 (ln 2)^2 = 0.240227 ; k3 = (0.5 - 1) + ln 2 = 0.193147
    logp, ref = t([[math.log(0.5), 0.0]]), t([[math.log(0.25), -5.0]])
    mask = t([[1, 0]])
    assert kl_penalty(logp, ref, mask, "k1")[0, 0].item() == pytest.approx(math.log(2))
    assert kl_penalty(logp, ref, mask, "k2")[0, 0].item() == pytest.approx(0.5 * math.log(2) ** 2)
    assert kl_penalty(logp, ref, mask, "k3")[0, 0].item() == pytest.approx(math.log(2) - 0.5)
    assert kl_penalty(logp, ref, mask, "k3")[0, 1].item() == 0.0  # masked
    with pytest.raises(ValueError, match="valid: k1, k2, k3"):
        kl_penalty(logp, ref, mask, "k9")


def test_k1_and_k3_are_unbiased_in_expectation():
    # E_{a~pi}[k1] = E_{a~pi}[k3] = KL(pi || pi_ref) exactly, summing over the whole support.
    g = torch.Generator().manual_seed(1)
    pi = torch.softmax(torch.randn(6, generator=g, dtype=torch.float64), 0)
    ref = torch.softmax(torch.randn(6, generator=g, dtype=torch.float64), 0)
    kl = (pi * (pi.log() - ref.log())).sum()
    ones = torch.ones(1, 6, dtype=torch.float64)
    for kind in ("k1", "k3"):
        est = (pi * kl_penalty(pi.log()[None], ref.log()[None], ones, kind)[0]).sum()
        assert est.item() == pytest.approx(kl.item())
    assert torch.all(kl_penalty(pi.log()[None], ref.log()[None], ones, "k3") >= 0)


# ---------------------------------------------------------------------------------------------
# masked statistics and log-probs


def test_masked_mean_and_whiten():
    x = t([[1.0, 2.0, 100.0], [3.0, 4.0, -100.0]])
    mask = t([[1, 1, 0], [1, 1, 0]])
    assert masked_mean(x, mask).item() == pytest.approx(2.5)
    assert torch.allclose(masked_mean(x, mask, dim=1), t([1.5, 3.5]))
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0  # not NaN
    w = masked_whiten(x, mask)
    assert torch.all(w[mask == 0] == 0)
    assert masked_mean(w, mask).item() == pytest.approx(0.0, abs=1e-9)
    # unbiased variance of 1,2,3,4 is 5/3: whitened first entry = (1 - 2.5) / sqrt(5/3)
    assert w[0, 0].item() == pytest.approx(-1.5 / math.sqrt(5 / 3), rel=1e-6)
    kept = masked_whiten(x, mask, shift_mean=False)
    assert masked_mean(kept, mask).item() == pytest.approx(2.5, rel=1e-6)


def test_explained_variance_hand_values():
    # returns 1, 0, 1, 0 on policy tokens (variance 0.25); the masked entry must not count
    #   V = R            -> errors all 0            -> 1
    #   V = 0.5          -> errors ±0.5, var 0.25   -> 0 (a constant explains nothing)
    #   V = 1 - R        -> errors ±1,   var 1      -> 1 - 1/0.25 = -3
    R = t([[1.0, 0.0, 1.0, 0.0, 7.0]])
    mask = t([[1, 1, 1, 1, 0]])
    assert explained_variance(R, R, mask).item() == pytest.approx(1.0)
    assert explained_variance(torch.full_like(R, 0.5), R, mask).item() == pytest.approx(0.0)
    assert explained_variance(1 - R, R, mask).item() == pytest.approx(-3.0)
    assert math.isnan(explained_variance(R, torch.ones_like(R), mask).item())  # nothing to explain


def test_token_logprobs_match_log_softmax_gather():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 5, 11, generator=g)
    ids = torch.randint(0, 11, (2, 5), generator=g)
    out = token_logprobs(logits, ids)
    expected = torch.log_softmax(logits, -1)[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
    assert torch.all(out[:, 0] == 0)
    assert torch.allclose(out[:, 1:], expected, atol=1e-6)
    hot = token_logprobs(logits, ids, temperature=0.5)
    assert torch.allclose(hot[:, 1:], torch.log_softmax(logits / 0.5, -1)[:, :-1].gather(-1, ids[:, 1:, None])[..., 0],
                          atol=1e-6)
    uniform = entropy_from_logits(torch.zeros(1, 1, 8))
    assert uniform.item() == pytest.approx(math.log(8))


# ---------------------------------------------------------------------------------------------
# registry


def test_advantage_registry_refuses_duplicates_and_lists_names():
    before = dict(ADVANTAGE_ESTIMATORS)
    with pytest.raises(ValueError, match="already registered"):
        register_advantage_estimator(AdvantageEstimator.gae)(lambda r, v, m, gamma, lam: (r, r))
    assert ADVANTAGE_ESTIMATORS == before
    with pytest.raises(ValueError, match=r"unknown advantage estimator 'grpo'; valid: gae, reinforce"):
        get_advantage_estimator("grpo")
    with pytest.raises(ValueError, match="not an AdvantageEstimator member"):
        register_advantage_estimator("grpo")
    assert get_advantage_estimator("gae") is gae
    assert get_advantage_estimator(AdvantageEstimator.gae) is gae
