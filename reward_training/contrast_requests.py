"""`contrast_requests` (opt-in): benign requests that sound harmful, so the request judgement
learns that a word like "kill" or "shoot" does not make a request harmful.

The requests are ours, composed from safe senses of violent or criminal words (homonyms,
figures of speech, games and fiction, cooking, definitions, history, public facts), the
kinds of prompt XSTest's safe half tests. No XSTest prompt is used: any composed request
whose word set is close to an XSTest prompt's (Jaccard >= `XSTEST_NEAR`) is dropped, so its
test split stays unseen. Each request gets a written refusal (safe, not actionable, not a
harmful request) and the policy's own answers (vLLM, cached, the `policy_answers` settings),
labelled as answers to a benign request: safety 1, actionability 1 unless the refusal judge
calls them refusals, harmful_request 0.
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
XSTEST_NEAR = 0.5
"""A composed request whose word set has at least this Jaccard similarity with an XSTest prompt's is dropped."""


def _words(text: str) -> set[str]:
    return set(normalise_prompt(text).split())


def contrast_prompts(xstest_prompts: list[str]) -> tuple[list[str], int]:
    """The composed requests, minus those near an XSTest prompt -> (requests, how many were dropped)."""
    composed = [tpl.format(t=task) for task in SAFE_SENSE_TASKS for tpl in TASK_TEMPLATES] + list(SAFE_QUESTIONS)
    xs = [_words(p) for p in xstest_prompts]

    def near(prompt: str) -> bool:
        w = _words(prompt)
        return any(len(w & x) / len(w | x) >= XSTEST_NEAR for x in xs)

    kept = [p for p in composed if not near(p)]
    return kept, len(composed) - len(kept)


def read_contrast_requests(data_dir: Path, cfg: PolicyAnswersConfig, holdout: set[str]) -> list[Example]:
    """A written refusal and the policy's answers for each composed request (module docstring)."""
    prompts, dropped = contrast_prompts(read_prompt_file(_need(data_dir / XSTEST_PROMPTS), "prompt"))
    prompts = [p for p in prompts if normalise_prompt(p) not in holdout]
    out = []
    for prompt, answers in zip(prompts, judged_answers(cfg, prompts), strict=True):
        key = normalise_prompt(prompt)
        out.append(Example("contrast_requests", key, prompt, _refusal_for(prompt), answer_targets("benign", True),
                           {"request": "benign", "answer": "refusal"}, REQUEST_SPLIT))
        for text, refused in answers:
            out.append(Example("contrast_requests", key, prompt, text, answer_targets("benign", refused),
                               {"request": "benign", "answer": "refusal" if refused else "compliance"}, REQUEST_SPLIT))
    log.info("contrast_requests: %d requests (%d dropped as near an XSTest prompt), %d rows", len(prompts), dropped,
             len(out))
    return out
