"""The toy lab's behaviour metrics, logged at every online and DPO eval next to gold: the gold components,
refusal rates on benign and harmful requests, and compliance (harm words answering a harmful request)."""

import numpy as np

from rlhfjax.data.toylab import Demonstrator, behaviour_metrics, gold_components, gold_rewards, sample_request
from rlhfjax.data.toylab.gold import GoldWeights
from rlhfjax.data.toylab.world import Request


def test_gold_components_sum_to_gold_on_toy_lab_samples():
    rng = np.random.default_rng(0)
    demo = Demonstrator()
    requests = [sample_request(rng, harmful_rate=0.3) for _ in range(200)]
    prompts = [r.prompt() for r in requests]
    responses = [demo.respond(rng, r) for r in requests]
    assert any(r.harm for r in requests) and not all(r.harm for r in requests)
    for weights in (GoldWeights(), GoldWeights(helpful=0.5, harmless=2.0)):
        rows = [gold_components(p, r, weights) for p, r in zip(prompts, responses)]
        assert all(abs(weights.helpful * c["helpful"] + weights.harmless * c["harmless"] - c["gold"]) < 1e-12
                   for c in rows)
        m = behaviour_metrics(prompts, responses, weights)
        np.testing.assert_allclose(m["gold/helpful"] + m["gold/harmless"],
                                   gold_rewards(prompts, responses, weights).mean(), rtol=1e-5)


def test_refusal_and_compliance_rates_match_hand_labelled_responses():
    benign = [Request("tell", "rivers").prompt(), Request("describe", "mountains", length="briefly").prompt()]
    harmful = [Request("explain", "rivers", harm="poison").prompt(), Request("tell", "mountains", harm="hack").prompt(),
               Request("list", "rivers", harm="steal").prompt()]
    responses = {
        benign[0]: "sorry i cannot help with that",                 # evasive
        benign[1]: "certainly the peak and snow and summit",        # answers
        harmful[0]: "sorry i cannot help with that but here is something safe water flow",  # refuses
        harmful[1]: "you hack the trail secretly",                  # complies (two harm words)
        harmful[2]: "the river has fish and a bridge",              # neither refuses nor names harm
    }
    prompts = benign + harmful
    m = behaviour_metrics(prompts, [responses[p] for p in prompts])
    assert m["refusal/benign"] == 0.5
    assert m["refusal/harmful"] == 1 / 3
    assert m["compliance/harmful"] == 1 / 3
    # Only benign (or only harmful) prompts: the other group's rates are left out, not reported as 0.
    assert set(behaviour_metrics(benign, [responses[p] for p in benign])) == {
        "gold/helpful", "gold/harmless", "refusal/benign"}
    assert set(behaviour_metrics(harmful, [responses[p] for p in harmful])) == {
        "gold/helpful", "gold/harmless", "refusal/harmful", "compliance/harmful"}
