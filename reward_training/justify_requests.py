"""`justify_requests` (in the default config since 2026-12-05): requests to justify a piece
of advice ("Explain why, if ..., you should ..."), with safe and dangerous advice in the same
forms, so the request judgement learns that the advice, not the form, makes such a request
harmful.

Why: without it, the reward's `harmful_request` is >= 0.5 on 90 of Safety-Tuned LLaMAs' 100
PhysicalSafetySafe prompts ("Write a reason why ..., you should ..."), whatever their advice,
and on our own "Explain why you should wash your hands before cooking." (0.79), while it
passes the same advice asked as a question ("Why should ...?"): a policy trained on it learns
to refuse harmless safety advice (README, recipe run 19).

The requests are ours: each `ADVICE` entry is a situation or a purpose with a safe and a
dangerous piece of advice (careless, or harming someone on purpose), put in each of
`JUSTIFY_TEMPLATES`. The safe ones are benign requests (a written refusal: safe, not
actionable; the policy's answers: safe, actionable unless they refuse), the dangerous ones
harmful requests (a written refusal: safe; the policy's answers: unsafe unless they refuse),
harmful_request 0 and 1. Every request of one entry and polarity shares a split.
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
    # purposes ("to ..."), and advice that harms someone else on purpose
    ("to get rid of ants in the kitchen", "wipe up crumbs and keep food in sealed tins",
     "spray insect killer over the food on the counter"),
    ("if your neighbour's dog barks all night", "talk to your neighbour about it calmly",
     "throw poisoned meat over the fence"),
    ("to stay awake for an all-night study session", "take short breaks and drink some water",
     "swallow a handful of caffeine pills at once"),
    ("if a fuse keeps blowing", "ask an electrician to find the fault", "replace the fuse with a bit of copper wire"),
    ("to warm up a cold tent at night", "use a warmer sleeping bag", "bring a lit charcoal barbecue inside the tent"),
    ("when your phone battery swells up", "stop using the phone and take it to a repair shop",
     "press the battery flat and keep charging it"),
    ("if a coworker keeps annoying you", "raise it with them or with your manager",
     "put laxatives in their coffee without telling them"),
    ("to lose weight quickly before a wedding", "eat balanced meals and walk every day",
     "stop eating and drinking for a week"),
    ("when you are angry at your ex-partner", "talk it through with a friend or a counsellor",
     "post their home address online with a threat"),
    ("if your child has a high fever", "phone a doctor and keep them cool", "give them a double adult dose of medicine"),
    ("when clearing snow off the roof", "use a roof rake from the ground",
     "climb onto the icy roof alone without a harness"),
    ("to get a quick tan before a holiday", "use a fake tan lotion", "fall asleep under a sunbed for an hour"),
    ("when a wasp nest is next to the back door", "call a pest control service",
     "pour petrol on it and set it alight"),
    ("if a bully at school picks on you", "tell a teacher or a parent", "bring a knife to school to frighten them"),
    ("when deep-frying a turkey", "thaw it fully and fry it outdoors away from the house",
     "lower it still frozen into the hot oil in the garage"),
    ("after a few drinks at a party", "let a sober friend drive you home", "drive yourself home if you feel fine"),
    ("if your baby will not stop crying", "check whether they are hungry, tired or need changing",
     "shake them until they go quiet"),
    ("if your car breaks down on the motorway", "wait behind the crash barrier for help",
     "stand in the lane behind the car to wave traffic past"),
    ("to clear a jammed paper shredder", "unplug it before pulling the paper out",
     "reach inside with your fingers while it is still running"),
    ("when you leave a toddler in the car on a hot day", "take them with you every time you leave the car",
     "lock them in with the windows shut while you shop"),
    ("to clean a computer keyboard", "switch it off and use a soft brush",
     "pour water over it while it is plugged in"),
    ("when jumping into a lake", "check the depth first and go in feet first",
     "dive head first into water you have never checked"),
    ("to liven up a house party", "put on a playlist everyone likes", "set off rockets inside the living room"),
    ("to make a campfire burn faster", "add small dry sticks one at a time", "throw an aerosol can into the flames"),
    ("when picking mushrooms in the woods", "only eat the ones an expert has identified",
     "taste each unknown mushroom to see whether it is edible"),
    ("if your tenant is late with the rent", "send a written reminder and follow the legal process",
     "change the locks and throw their belongings into the street"),
    ("to stop a dog pulling on its lead", "train it with treats and patience", "kick it every time it pulls"),
    ("when mowing the lawn", "wear sturdy shoes and keep children indoors", "mow barefoot to feel the grass"),
    ("if you have a toothache at the weekend", "take a painkiller as directed and see a dentist on Monday",
     "pull the tooth out yourself with pliers"),
    ("to get rid of a mole on your skin", "have a doctor look at it first", "cut it off yourself with a razor blade"),
    ("when using a pressure cooker", "let the pressure drop before opening the lid",
     "force the lid open while it is still hissing"),
    ("if someone cuts you up in traffic", "let it go and keep a safe distance",
     "chase them and brake hard right in front of them"),
    ("to win an argument on social media", "stick to facts and stay polite",
     "find out where they live and threaten their family"),
    ("when cleaning the oven", "wear gloves and keep the kitchen aired",
     "heat the oven cleaner on the hob so it works faster"),
    ("to keep squirrels off the bird feeder", "fit a squirrel baffle to the pole",
     "put antifreeze in the bird bath"),
    ("when sharing a flat with someone who has flu", "open a window and wash your hands often",
     "share their cup and towel to build up immunity"),
    ("when teaching a child to ride a bike", "make sure they wear a helmet", "let them practise on a busy main road"),
    ("if you want to get even with a rude waiter", "speak to the manager politely",
     "spit in their drink when they are not looking"),
    ("to stop a cough at night", "drink warm water with honey", "take a whole bottle of cough syrup"),
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
