"""`justify_requests` (opt-in): requests to justify a piece of advice ("Explain why, if ...,
you should ..."), with safe and dangerous advice in the same forms, so the request judgement
learns that the advice, not the form, makes such a request harmful.

Why: the default reward's `harmful_request` is >= 0.5 on 90 of Safety-Tuned LLaMAs' 100
PhysicalSafetySafe prompts ("Write a reason why ..., you should ..."), whatever their advice,
and on our own "Explain why you should wash your hands before cooking." (0.79), while it
passes the same advice asked as a question ("Why should ...?"): a policy trained on it learns
to refuse harmless safety advice (README, recipe run 19).

The requests are ours: each `ADVICE` entry is a situation with a safe and a dangerous piece of
advice, put in each of `JUSTIFY_TEMPLATES`. The safe ones are benign requests (a written
refusal: safe, not actionable; the policy's answers: safe, actionable unless they refuse), the
dangerous ones harmful requests (a written refusal: safe; the policy's answers: unsafe unless
they refuse), harmful_request 0 and 1. Every request of one entry and polarity shares a split.
Any request close to an evaluation prompt (XSTest's, Safety-Tuned LLaMAs' physical-safety and
controversial sets; Jaccard >= `EVAL_NEAR`) is dropped, so those sets stay unseen.
"""

from __future__ import annotations

from pathlib import Path

from mogrpo.config.reward_training import PolicyAnswersConfig
from reward_training.contrast_requests import ComposedRequest, composed_prompts, read_composed, safety_eval_prompts
from reward_training.sources import Example

JUSTIFY_TEMPLATES = ("Explain why {s}, you should {a}.", "Write a reason why {s}, you should {a}.",
                     "Describe why {s}, you should {a}.", "Give one reason why {s}, you should {a}.")
ADVICE = (  # (situation, safe advice, dangerous advice)
    ("after cutting raw chicken", "wash the cutting board in hot soapy water",
     "chop the salad on the same board without washing it"),
    ("if a pan of oil catches fire", "cover it with a lid and turn off the heat", "throw a glass of water on it"),
    ("when cleaning the bathroom", "open a window and use one product at a time",
     "mix bleach with ammonia for a stronger cleaner"),
    ("if you feel sleepy while driving on the motorway", "stop at the next rest area for a nap",
     "open the window and keep driving through the night"),
    ("when your toddler is in the paddling pool", "stay within arm's reach the whole time",
     "leave them alone in the water while you go inside"),
    ("if your smoke alarm keeps chirping", "replace its battery the same day",
     "take the battery out and leave the alarm empty"),
    ("if someone has a nosebleed", "have them lean forward and pinch the soft part of the nose",
     "have them tilt their head far back and swallow the blood"),
    ("when working on a tall ladder", "keep three points of contact and have someone hold it",
     "stand on the very top step to reach further"),
    ("if you burn your hand on the oven", "cool it under running water for twenty minutes",
     "rub butter on it and wrap it tightly"),
    ("when swimming in the sea on holiday", "swim between the lifeguard flags",
     "swim out alone past the buoys after dark"),
    ("if you find old pills in the bathroom cabinet", "take them to a pharmacy to be disposed of",
     "take a few to see whether they still work"),
    ("when hiking on a hot day", "carry plenty of water and rest in the shade",
     "leave the water at home to keep your pack light"),
    ("if a storm starts while you are on a golf course", "go indoors straight away",
     "shelter under the tallest tree on the course"),
    ("when cycling home at night", "use front and rear lights", "ride without lights to save the battery"),
    ("if a child swallows a button battery", "go to the emergency department at once",
     "wait a few days to see whether it passes"),
    ("if you are stung by a jellyfish", "rinse the sting with sea water", "rub the sting hard with dry sand"),
    ("when storing cleaning products", "keep them in their original labelled containers",
     "pour them into old lemonade bottles"),
    ("if your car's brakes feel soft", "have a mechanic check them before driving on",
     "keep driving and just press the pedal harder"),
    ("when lifting a heavy box", "bend your knees and keep your back straight",
     "bend at the waist and twist as you lift"),
    ("if a friend drinks too much and passes out", "lay them on their side and stay with them",
     "leave them on their back to sleep it off alone"),
    ("when using a fan heater in the bedroom", "keep it well away from the curtains",
     "dry your wet towels by draping them over it"),
    ("if you see a fallen power line in the street", "keep well away and call the electricity company",
     "drag it out of the road with a branch"),
    ("when thawing a frozen joint of beef", "thaw it slowly in the fridge",
     "leave it on the kitchen counter for two days"),
    ("before walking on a frozen pond", "check that the ice is officially declared thick enough",
     "walk straight out as soon as the surface looks white"),
    ("if your dog eats a bar of dark chocolate", "phone a vet right away",
     "give it another bar and see what happens"),
    ("when taking painkillers for a headache", "stick to the dose on the packet",
     "double the dose so they work faster"),
    ("when putting a newborn down to sleep", "lay them on their back in an empty cot",
     "lay them face down on a soft pillow"),
    ("if the kitchen smells of gas", "open the windows and leave without touching any switches",
     "light a match to find where the leak is"),
    ("when jump-starting a flat car battery", "connect the cables in the order the manual gives",
     "touch the two clamps together first to test for a spark"),
    ("when using a chainsaw for the first time", "wear eye protection, gloves and chainsaw trousers",
     "take the chain guard off so it cuts faster"),
)


def justify_prompts(eval_prompts: list[str]) -> tuple[list[ComposedRequest], int]:
    """Every (request, "benign" or "harmful", split key) of `ADVICE` x `JUSTIFY_TEMPLATES`,
    minus those near a prompt of `eval_prompts` -> (requests, how many were dropped)."""
    rows = [(tpl.format(s=situation, a=advice), request, f"justify-{i}-{request}")
            for i, (situation, safe, dangerous) in enumerate(ADVICE)
            for request, advice in (("benign", safe), ("harmful", dangerous)) for tpl in JUSTIFY_TEMPLATES]
    kept, dropped = composed_prompts([r[0] for r in rows], eval_prompts)
    kept = set(kept)
    return [r for r in rows if r[0] in kept], dropped


def read_justify_requests(data_dir: Path, cfg: PolicyAnswersConfig, holdout: set[str]) -> list[Example]:
    """`justify_requests` rows (module docstring)."""
    return read_composed("justify_requests", justify_prompts(safety_eval_prompts(data_dir)), cfg, holdout)
