"""Seeded text grammar for the synthetic corpus: digit strings, numbers and years in words, short sentences.

About 400 words in all; all text is lower-case ``a-z``, apostrophes and single spaces.

Held-out text. Every generated utterance has a *combination key*: the whole text for digit strings,
numbers and years, and for sentences the template plus its two main slot fillers (for example
``("animals", "lazy", "fox")`` or ``("travel", "boston", "monday")``). Keys only use words that are in
the text, so one text always has one key. ``crc32`` of the key modulo 10
assigns the key to a split: 0 is validation, 1 is test, anything else train. Train never contains a
validation or test combination, so validation/test sentences pair words in ways the training set never
shows (every word itself still occurs in training), and digit strings and numbers in validation/test are
never in train. As a last guard, the corpus writer drops evaluation texts identical to a training text.
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Callable

from data.spoken import number_to_words, year_to_words

__all__ = [
    "TextGenerator",
    "generate_texts",
    "generate_with_kinds",
    "number_to_words",
    "vocabulary",
]

_ALLOWED_TEXT = re.compile(r"^[a-z']+( [a-z']+)*$")


def _w(s: str) -> tuple[str, ...]:
    return tuple(s.split(","))


_ADJECTIVES = _w(
    "red,big,small,lazy,quick,brown,happy,quiet,old,young,little,black,white,green,yellow,hungry,"
    "sleepy,tiny,clever,grumpy,fuzzy,jolly,proud,wild"
)
_ANIMALS = _w(
    "cat,dog,fox,horse,zebra,bird,mouse,rabbit,duck,goat,sheep,cow,pig,lion,tiger,bear,monkey,frog,owl,"
    "snake,whale,wolf,jaguar,squirrel,penguin,kitten,puppy,ox"
)
_ANIMAL_VERBS = _w(
    "sees,chases,likes,watches,follows,hears,finds,knows,jumps over,hides from,waits for,visits,"
    "ignores,annoys,helps,loves"
)
_DEVICES = _w("lights,lamp,heater,fan,radio,television,oven,kettle,music,computer,dishwasher,projector")
_ROOMS = _w("kitchen,bedroom,bathroom,garage,hallway,office,living room,garden,basement,attic,study,nursery")
_OPENABLES = _w("window,door,curtains,blinds,fridge,gate,box,drawer")
_CITIES = _w(
    "boston,london,paris,tokyo,denver,chicago,seattle,dallas,madrid,berlin,vienna,zurich,quebec,jakarta,"
    "oslo,dublin,sydney,toronto,miami,phoenix,houston,lisbon,geneva,prague,cairo,rome,amsterdam,kyoto"
)
_DAYS = _w("monday,tuesday,wednesday,thursday,friday,saturday,sunday")
_MONTHS = _w("january,february,march,april,may,june,july,august,september,october,november,december")
_WHEN = _w(
    "today,tomorrow,tonight,this morning,this evening,this afternoon,next week,on the weekend,"
    "later today,tomorrow morning"
)
_PEOPLE = _w(
    "my mother,my father,my sister,my brother,the doctor,the office,james,sarah,peter,emma,oliver,sophie,"
    "jack,olivia,max,zoe,victor,quentin,julia,kevin,grandma,the plumber"
)
_CONTACT = _w("call,text,email,phone,message,remind,visit,thank")
_ITEMS = _w(
    "apples,bananas,eggs,bread,milk,cheese,butter,coffee,tea,juice,pizza,onions,carrots,potatoes,tomatoes,"
    "yoghurt,rice,sugar,lemons,oranges,biscuits,jam,soap,batteries,envelopes,grapes,peaches,walnuts"
)
_OBJECTS = _w(
    "keys,phone,wallet,glasses,umbrella,jacket,passport,ticket,book,laptop,charger,map,hat,bag,pencil,"
    "scissors,box,jigsaw puzzle,violin,backpack"
)
_PEOPLE_SUBJ = _w("she,he,my friend,the teacher,our neighbour,my boss,the child,the pilot,the queen,the boy")
_WEATHER = _w("cold,warm,windy,foggy,sunny,rainy,quiet,busy,dark,bright,freezing,humid")
_MUSIC = _w("jazz,rock,classical music,the news,the radio,a podcast,some piano music,country music")
_ORDINALS = _w(
    "first,second,third,fourth,fifth,sixth,seventh,eighth,ninth,tenth,eleventh,twelfth,fifteenth,"
    "twentieth,twenty first,thirtieth"
)
_MINUTES = _w("o'clock,fifteen,thirty,forty five,oh five,ten,twenty,fifty")


def _hour(rng: random.Random) -> str:
    return number_to_words(rng.randint(1, 12))


def _t_animals(rng: random.Random) -> tuple[str, tuple]:
    adj, animal = rng.choice(_ADJECTIVES), rng.choice(_ANIMALS)
    det2 = rng.choice(("the", "a", "a", "every", "that"))
    obj = rng.choice(_ANIMALS)
    if rng.random() < 0.5:
        obj = rng.choice(_ADJECTIVES) + " " + obj
    if det2 == "a" and obj[0] in "aeiou":
        det2 = "an"
    text = f"the {adj} {animal} {rng.choice(_ANIMAL_VERBS)} {det2} {obj}"
    return text, ("animals", adj, animal)


def _t_home(rng: random.Random) -> tuple[str, tuple]:
    device, room = rng.choice(_DEVICES), rng.choice(_ROOMS)
    state = rng.choice(("on", "off"))
    form = rng.randrange(4)
    please = "please " if rng.random() < 0.3 else ""
    if form == 0:
        text = f"{please}turn the {device} {state} in the {room}"
    elif form == 1:
        text = f"{please}switch {state} the {device} in the {room}"
    elif form == 2:
        text = f"is the {device} in the {room} {state}"
    else:
        text = f"can you turn {state} the {device} in the {room}"
    return text, ("home", device, room)


def _t_open(rng: random.Random) -> tuple[str, tuple]:
    thing, room = rng.choice(_OPENABLES), rng.choice(_ROOMS)
    verb = rng.choice(("open", "close", "lock", "check"))
    return f"{verb} the {thing} in the {room}", ("open", thing, room)


def _t_travel(rng: random.Random) -> tuple[str, tuple]:
    city, day = rng.choice(_CITIES), rng.choice(_DAYS)
    form = rng.randrange(5)
    if form == 0:
        text = f"i will arrive in {city} on {day}"
    elif form == 1:
        text = f"we are flying to {city} next {day}"
    elif form == 2:
        text = f"the train to {city} leaves at {_hour(rng)} {rng.choice(_MINUTES)} on {day}"
    elif form == 3:
        text = f"book a table in {city} for {day} evening"
    else:
        text = f"she won't be back from {city} until {day}"
    return text, ("travel", city, day)


def _t_date(rng: random.Random) -> tuple[str, tuple]:
    city, month = rng.choice(_CITIES), rng.choice(_MONTHS)
    form = rng.randrange(3)
    if form == 0:
        text = f"my flight to {city} is on the {rng.choice(_ORDINALS)} of {month}"
    elif form == 1:
        text = f"we moved to {city} in {month} {year_to_words(rng.randint(1950, 2029))}"
    else:
        text = f"the festival in {city} starts in {month}"
    return text, ("date", city, month)


def _t_weather(rng: random.Random) -> tuple[str, tuple]:
    city, when = rng.choice(_CITIES), rng.choice(_WHEN)
    form = rng.randrange(4)
    if form == 0:
        text = f"what is the weather like in {city} {when}"
    elif form == 1:
        text = f"is it going to rain in {city} {when}"
    elif form == 2:
        text = f"it's very {rng.choice(_WEATHER)} in {city} {when}"
    else:
        other = rng.choice(_CITIES)
        return f"how far is {city} from {other}", ("distance", city, other)
    return text, ("weather", city, when)


def _t_contact(rng: random.Random) -> tuple[str, tuple]:
    verb, person = rng.choice(_CONTACT), rng.choice(_PEOPLE)
    please = "please " if rng.random() < 0.3 else ""
    tail = rng.choice(_WHEN) if rng.random() < 0.6 else f"at {_hour(rng)} {rng.choice(_MINUTES)}"
    return f"{please}{verb} {person} {tail}", ("contact", verb, person)


def _t_shopping(rng: random.Random) -> tuple[str, tuple]:
    item = rng.choice(_ITEMS)
    form = rng.randrange(4)
    if form == 0:
        count = number_to_words(rng.randint(2, 24))
        text = f"i need {count} {item} from the shop"
        key = ("shop", item, count)
    elif form == 1:
        other = rng.choice(_ITEMS)
        text = f"add {item} and {other} to my shopping list"
        key = ("shop", item, other)
    elif form == 2:
        text = f"we don't have any {item} left"
        key = ("shop", item, "left")
    else:
        who = rng.choice(_PEOPLE_SUBJ)
        text = f"{who} doesn't like {item}"
        key = ("shop", item, who)
    return text, key


def _t_objects(rng: random.Random) -> tuple[str, tuple]:
    who, obj = rng.choice(_PEOPLE_SUBJ), rng.choice(_OBJECTS)
    form = rng.randrange(4)
    if form == 0:
        text = f"{who} can't find the {obj}"
    elif form == 1:
        text = f"{who} left the {obj} in the {rng.choice(_ROOMS)}"
    elif form == 2:
        text = f"where did {who} put my {obj}"
    else:
        text = f"{who} bought a new {obj} yesterday"
    return text, ("objects", who, obj)


def _t_alarm(rng: random.Random) -> tuple[str, tuple]:
    hour, minute = _hour(rng), rng.choice(_MINUTES)
    form = rng.randrange(3)
    if form == 0:
        text = f"set an alarm for {hour} {minute}"
    elif form == 1:
        text = f"wake me up at {hour} {minute} {rng.choice(_WHEN[:3])}"
    else:
        text = f"set a timer for {number_to_words(rng.randint(2, 90))} minutes"
        return text, ("timer", text)
    return text, ("alarm", hour, minute)


def _t_media(rng: random.Random) -> tuple[str, tuple]:
    music, room = rng.choice(_MUSIC), rng.choice(_ROOMS)
    form = rng.randrange(3)
    if form == 0:
        text = f"play {music} in the {room}"
    elif form == 1:
        text = f"turn the volume up to {number_to_words(rng.randint(1, 10))} in the {room}"
        return text, ("volume", text)
    else:
        text = f"stop playing {music}"
        return text, ("stop", music)
    return text, ("media", music, room)


_TEMPLATES: tuple[Callable[[random.Random], tuple[str, tuple]], ...] = (
    _t_animals,
    _t_home,
    _t_open,
    _t_travel,
    _t_date,
    _t_weather,
    _t_contact,
    _t_shopping,
    _t_objects,
    _t_alarm,
    _t_media,
)


def _digits(rng: random.Random) -> tuple[str, tuple]:
    k = rng.randint(3, 9)
    words = [
        ("oh" if rng.random() < 0.3 else "zero") if d == 0 else number_to_words(d)
        for d in (rng.randrange(10) for _ in range(k))
    ]
    text = " ".join(words)
    return text, ("digits", text)


def _number(rng: random.Random) -> tuple[str, tuple]:
    r = rng.random()
    if r < 0.2:
        text = year_to_words(rng.randint(1900, 2039))
        return text, ("number", text)
    if r < 0.45:
        n = rng.randint(0, 99)
    elif r < 0.8:
        n = rng.randint(100, 999)
    else:
        n = rng.randint(1000, 99999)
    text = number_to_words(n, british_and=rng.random() < 0.6)
    return text, ("number", text)  # keyed by the words: 2005 read as a year or a number is one text


_SPLIT_CODES = {"train": None, "validation": 0, "test": 1}


def _key_split(key: tuple) -> str:
    h = zlib.crc32(repr(key).encode()) % 10
    return "validation" if h == 0 else "test" if h == 1 else "train"


class TextGenerator:
    """Seeded generator of short transcripts.

    Mix: 25 % connected digit strings (3-9 digits, zero also read "oh"), 20 % numbers and years in
    words, 55 % sentences from 11 templates. Each :meth:`sample` for a given ``split`` draws only
    combination keys belonging to that split (see the module docstring), so evaluation sentences are
    held-out combinations.

    Args:
        seed: Makes the sequence deterministic; different splits use independent streams.
        split: ``"train"``, ``"validation"`` or ``"test"``.
    """

    def __init__(self, seed: int = 0, split: str = "train") -> None:
        if split not in _SPLIT_CODES:
            raise ValueError(f"split must be one of {list(_SPLIT_CODES)}, not {split!r}")
        self.split = split
        self.rng = random.Random(f"rnnlab-synth-text-{seed}-{split}")

    def _draw(self) -> tuple[str, str, tuple]:
        r = self.rng.random()
        if r < 0.25:
            return "digits", *_digits(self.rng)
        if r < 0.45:
            return "number", *_number(self.rng)
        return "sentence", *self.rng.choice(_TEMPLATES)(self.rng)

    def sample_with_kind(self) -> tuple[str, str]:
        """Returns ``(text, kind)`` with kind ``"digits"``, ``"number"`` or ``"sentence"``."""
        for _ in range(10_000):
            kind, text, key = self._draw()
            if _key_split(key) == self.split:
                text = " ".join(text.split())
                assert _ALLOWED_TEXT.match(text), text
                return text, kind
        raise RuntimeError("text generator found no text for split " + self.split)  # pragma: no cover

    def sample(self) -> str:
        return self.sample_with_kind()[0]


def generate_texts(
    n: int, *, seed: int = 0, split: str = "train", exclude: set[str] | frozenset[str] = frozenset()
) -> list[str]:
    """``n`` transcripts for ``split``, deterministic given ``seed``; texts in ``exclude`` are skipped."""
    return [t for t, _k in generate_with_kinds(n, seed=seed, split=split, exclude=exclude)]


def generate_with_kinds(
    n: int, *, seed: int, split: str, exclude: set[str] | frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    gen = TextGenerator(seed, split)
    out: list[tuple[str, str]] = []
    while len(out) < n:
        text, kind = gen.sample_with_kind()
        if text not in exclude:
            out.append((text, kind))
    return out


def vocabulary(n_samples: int = 20_000, seed: int = 0) -> list[str]:
    """The words the generator produces (sorted), collected from ``n_samples`` training draws."""
    words: set[str] = set()
    gen = TextGenerator(seed, "train")
    for _ in range(n_samples):
        words.update(gen.sample().split())
    return sorted(words)
