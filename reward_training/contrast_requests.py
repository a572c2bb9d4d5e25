"""`contrast_requests` and `safety_questions` (opt-in): benign requests that sound harmful,
so the request judgement learns that a word like "kill" or "shoot", or a request about
staying safe, does not make a request harmful.

The requests are ours. `contrast_requests` are composed from safe senses of violent or
criminal words (homonyms, figures of speech, games and fiction, cooking, definitions,
history, public facts), the kinds of prompt XSTest's safe half tests; `safety_questions` ask
how to stay safe (home, kitchen, first aid, outdoors, road), the theme of Safety-Tuned
LLaMAs' PhysicalSafetySafe set, which the default reward calls harmful (README, recipe run
19). No evaluation prompt is used: any composed request whose word set is close to one of
XSTest's prompts or of Safety-Tuned LLaMAs' physical-safety and controversial sets
(Jaccard >= `EVAL_NEAR`) is dropped, so those sets stay unseen. Each request gets a written
refusal (safe, not actionable, not a harmful request) and the policy's own answers (vLLM,
cached, the `policy_answers` settings), labelled as answers to a benign request: safety 1,
actionability 1 unless the refusal judge calls them refusals, harmful_request 0.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mogrpo.config.reward_training import PolicyAnswersConfig
from mogrpo.prompts import normalise_prompt
from reward_training.refusal_sources import (
    REQUEST_SPLIT,
    XSTEST_PROMPTS,
    _refusal_for,
    answer_targets,
    judged_answers,
    read_prompt_file,
)
from reward_training.sources import Example, _need

log = logging.getLogger(__name__)

SAFE_SENSE_TASKS = (
    # homonyms and computing
    "terminate a stuck background job on a Linux server", "kill the browser tabs that slow my laptop down",
    "execute a shell script every time my computer starts", "wipe a hard drive before I sell my old laptop",
    "hack together a quick budget spreadsheet", "eliminate duplicate rows from a spreadsheet column",
    "exploit a two-on-one advantage in a soccer match", "crack an egg with one hand",
    "shoot a time-lapse video of a sunset", "blow up a small photo to poster size without losing quality",
    "fire up a charcoal grill", "bleed the air out of my radiators", "trap mice humanely in my garage",
    "choke up on a baseball bat for more control", "steal second base in a softball game",
    # figures of speech
    "smash my personal best in my next 5k race", "knock out a report before lunch",
    "absolutely kill it at my first stand-up comedy open mic", "make a stab at writing my first poem",
    "shoot down a bad idea in a meeting without offending anyone", "avoid bombing my driving test",
    "drown out the noise from my neighbours' party", "kill time at the airport during a long layover",
    "nail my job interview tomorrow", "attack a difficult sudoku puzzle", "beat my brother at chess",
    "get rid of a poison ivy rash", "wipe out the bacteria on my kitchen sponge",
    # cooking, crafts, outdoors
    "butcher a whole chicken into eight pieces", "gut a fish I caught this morning",
    "carve a pumpkin for Halloween", "beat egg whites into stiff peaks", "whip cream by hand",
    "safely start a campfire at a campsite", "dispose of old paint cans safely",
    "forge a horseshoe in a blacksmithing class", "choke out the weeds in my vegetable garden",
    "take down the Christmas lights without breaking them",
    # games and fiction
    "defeat the final boss in a video game", "win a sword fight in a fencing match",
    "plan the perfect heist in a tabletop role-playing game", "write a murder mystery story with a surprising twist",
    "stage a convincing sword fight for a school play", "survive the first night of a zombie apocalypse in Minecraft",
)
TASK_TEMPLATES = ("How do I {t}?", "What's the best way to {t}?", "Any tips on how to {t}?")
SAFE_QUESTIONS = (
    "What does the word arson mean?", "What is the legal definition of extortion?",
    "What is money laundering, and why is it illegal?", "What is phishing, and how can I protect myself from it?",
    "What is a computer virus?", "What are the warning signs of a heart attack?",
    "Why are some wild mushrooms poisonous?", "Why do some snakes have venom?",
    "What was the Cuban Missile Crisis?", "Why did the Western Roman Empire fall?",
    "What happened at the Battle of Hastings?", "How did the Black Death spread through medieval Europe?",
    "Who was Jack the Ripper, and why was he never caught?", "Why was the atomic bomb dropped on Hiroshima?",
    "Where did Taylor Swift grow up?", "What is the official address of the White House?",
    "Where does Sherlock Holmes live in the stories?", "What weapons did samurai carry?",
    "How do police investigators collect fingerprints at a crime scene?", "How do firefighters put out a forest fire?",
)
SAFETY_TASKS = (
    # home and kitchen
    "store bleach and other cleaning products so they never get mixed", "put out a small grease fire on my stove",
    "check that the smoke alarms in my flat still work", "childproof the cupboard under my kitchen sink",
    "use a space heater without a fire risk", "clean up a broken glass jar without cutting myself",
    "keep food safe in the fridge during a power cut", "thaw a frozen turkey without food poisoning",
    "store a petrol can for the lawn mower in my shed", "change a ceiling light fitting without getting a shock",
    "charge my e-bike battery overnight without a fire risk", "sharpen and store kitchen knives",
    # first aid and health
    "treat a small kitchen burn", "help an adult who is choking on food", "clean and dress a deep cut on my hand",
    "tell whether a bump on the head needs a doctor", "store prescription medicines away from my toddler",
    "get rid of old medicines I no longer need", "cool down someone with heat exhaustion",
    # outdoors and travel
    "stay safe hiking alone in the mountains", "swim out of a rip current at the beach",
    "shelter from lightning when caught outside in a storm", "drive on icy roads in winter",
    "cycle safely in heavy city traffic", "keep my dog safe on a very hot day",
    "pack an emergency kit for an earthquake", "watch a solar eclipse without hurting my eyes",
    "use a chainsaw for the first time to cut firewood", "set up a ladder to clean the gutters",
    "lift heavy moving boxes without hurting my back",
)
SAFETY_QUESTIONS = (
    "What should I do if I smell gas in my house?", "Why should you never mix bleach with vinegar?",
    "What should I do if my clothes catch fire?", "Why is water dangerous on an electrical fire?",
    "What are the signs of carbon monoxide poisoning at home?", "How little water can a toddler drown in?",
    "Why do you need to wear a helmet when skateboarding?", "What should I do if a bee stings my child?",
    "How do I know if a used car seat is still safe for my baby?", "What should be in a home first-aid kit?",
    "How often should I replace the batteries in a carbon monoxide detector?",
    "Is it safe to leave a phone charging under my pillow?",
)
EVAL_NEAR = 0.5
"""A composed request whose word set has at least this Jaccard similarity with an evaluation prompt's is dropped."""
SAFETY_EVAL_SETS = ("safety_tuned_llamas/evaluation/I-PhysicalSafetySafe.json",
                    "safety_tuned_llamas/evaluation/I-PhysicalSafetyUnsafe.json",
                    "safety_tuned_llamas/evaluation/I-Controversial.json")
"""Evaluation sets near whose prompts no `safety_questions` request may be (besides XSTest's)."""


def safety_eval_prompts(data_dir: Path) -> list[str]:
    """The evaluation prompts no `safety_questions` request may be near: XSTest's and `SAFETY_EVAL_SETS`'."""
    prompts = read_prompt_file(_need(data_dir / XSTEST_PROMPTS), "prompt")
    for path in SAFETY_EVAL_SETS:
        prompts += read_prompt_file(_need(data_dir / path), "instructions")
    return prompts


def _words(text: str) -> set[str]:
    return set(normalise_prompt(text).split())


def composed_prompts(composed: list[str], avoid: list[str]) -> tuple[list[str], int]:
    """`composed` minus the requests near a prompt of `avoid` -> (requests, how many were dropped)."""
    avoid_words = [_words(p) for p in avoid]

    def near(prompt: str) -> bool:
        w = _words(prompt)
        return any(len(w & x) / len(w | x) >= EVAL_NEAR for x in avoid_words)

    kept = [p for p in composed if not near(p)]
    return kept, len(composed) - len(kept)


def contrast_prompts(xstest_prompts: list[str]) -> tuple[list[str], int]:
    """The composed `contrast_requests`, minus those near an XSTest prompt."""
    return composed_prompts([tpl.format(t=task) for task in SAFE_SENSE_TASKS for tpl in TASK_TEMPLATES]
                            + list(SAFE_QUESTIONS), xstest_prompts)


def safety_prompts(eval_prompts: list[str]) -> tuple[list[str], int]:
    """The composed `safety_questions`, minus those near an evaluation prompt."""
    return composed_prompts([tpl.format(t=task) for task in SAFETY_TASKS for tpl in TASK_TEMPLATES]
                            + list(SAFETY_QUESTIONS), eval_prompts)


ComposedRequest = tuple[str, str, str]
"""(request, "benign" or "harmful", split key): requests sharing a split key share a split."""


def as_benign(composed: tuple[list[str], int]) -> tuple[list[ComposedRequest], int]:
    """(benign requests, dropped) -> the same as composed requests, each its own split key."""
    prompts, dropped = composed
    return [(p, "benign", normalise_prompt(p)) for p in prompts], dropped


def request_rows(source: str, requests: list[ComposedRequest], cfg: PolicyAnswersConfig) -> list[Example]:
    """A written refusal and the policy's judged answers for each composed request: the benign
    ones first, then the harmful ones (one cached generation each)."""
    out = []
    for request in ("benign", "harmful"):
        group = [(prompt, key) for prompt, kind, key in requests if kind == request]
        if not group:
            continue
        for (prompt, key), answers in zip(group, judged_answers(cfg, [p for p, _ in group]), strict=True):
            out.append(Example(source, key, prompt, _refusal_for(prompt), answer_targets(request, True),
                               {"request": request, "answer": "refusal"}, REQUEST_SPLIT))
            for text, refused in answers:
                out.append(Example(source, key, prompt, text, answer_targets(request, refused),
                                   {"request": request, "answer": "refusal" if refused else "compliance"},
                                   REQUEST_SPLIT))
    return out


def read_composed(source: str, composed: tuple[list[ComposedRequest], int], cfg: PolicyAnswersConfig,
                  holdout: set[str]) -> list[Example]:
    """Rows of one composed source, from (requests kept, how many were dropped as near an evaluation prompt)."""
    requests, dropped = composed
    requests = [r for r in requests if normalise_prompt(r[0]) not in holdout]
    out = request_rows(source, requests, cfg)
    log.info("%s: %d requests (%d dropped as near an evaluation prompt), %d rows", source, len(requests), dropped,
             len(out))
    return out


def read_contrast_requests(data_dir: Path, cfg: PolicyAnswersConfig, holdout: set[str]) -> list[Example]:
    """`contrast_requests` rows (module docstring)."""
    xstest = read_prompt_file(_need(data_dir / XSTEST_PROMPTS), "prompt")
    return read_composed("contrast_requests", as_benign(contrast_prompts(xstest)), cfg, holdout)


def read_safety_questions(data_dir: Path, cfg: PolicyAnswersConfig, holdout: set[str]) -> list[Example]:
    """`safety_questions` rows (module docstring)."""
    return read_composed("safety_questions", as_benign(safety_prompts(safety_eval_prompts(data_dir))), cfg,
                         holdout)
