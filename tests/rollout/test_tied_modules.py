"""A tied LM head is re-packed once per update, as soon as the embedding it shares has
loaded; vLLM's own reload processes only the module the checkpoint names."""

import torch

from rollout.weight_engine import TiedModules


class Recorder:
    def __init__(self, calls):
        self.calls = calls

    def process_weights_after_loading(self, module):
        self.calls.append(module.tag)


def tied_model(calls):
    model = torch.nn.Module()
    model.embed = torch.nn.Module()
    model.head = torch.nn.Module()
    model.other = torch.nn.Module()
    shared = torch.nn.Parameter(torch.zeros(4, 2))
    for name, weight in (("embed", shared), ("head", shared), ("other", torch.nn.Parameter(torch.zeros(2)))):
        module = getattr(model, name)
        module.weight, module.tag, module.quant_method = weight, name, Recorder(calls)
    return model


def test_follower_is_refreshed_when_its_leader_loads_and_only_then():
    calls = []
    tied = TiedModules(tied_model(calls))
    assert [[name for name, _ in members] for members in tied.sets] == [["embed", "head"]]
    for _ in range(2):  # two updates
        tied.start_update()
        tied.loaded(["other.weight"])
        assert calls == []
        tied.loaded(["embed.weight", "other.weight"])
        assert calls == ["head"]
        tied.finish_update()
        assert calls == ["head"]  # not again at the end
        calls.clear()


def test_unmatched_names_fall_back_to_refreshing_every_member_at_the_end():
    calls = []
    tied = TiedModules(tied_model(calls))
    tied.start_update()
    tied.loaded(["model.embed_tokens.weight"])  # a name the model does not use
    tied.finish_update()
    assert sorted(calls) == ["embed", "head"]
