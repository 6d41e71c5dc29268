"""Seeded synthetic research world: a typed knowledge graph rendered into web pages of graded authority.

    from deepresearch.config import WorldConfig
    world = generate_world(WorldConfig(seed=7, entities_per_type=40))
    world.save(Path("out/world"))        # byte-identical output for the same config

What it makes (other modules — the scripted expert, task synthesis — rely on this design):

* `entities_per_type` entities of each type (person, organization, place, work, event, product),
  ids "E%06d" in generation order, unique pronounceable names from seeded syllables, aliases
  ("M. Quell" for persons, acronyms for organizations, the brand for products, the series name
  for events), true `attributes` (see ATTRIBUTES) and a short description that never contains the
  entity's own name and is unique across the world ("a chemist born in 1932 in Orvane").
* typed relations (see RELATIONS): each entity has at most one tail per relation; one relation per
  type (born_in, headquartered_in, created_by, held_in, made_by) is always present, so every entity
  of a type with relations has an out-edge (places have none).
  Tails are drawn from a reshuffled deck, which spreads in-edges evenly over the tail type.
* one high-tier reference page per entity that states every attribute and every outgoing relation
  correctly (a Claim per fact, with its paragraph index); paragraph 0 reads "<name> is <description>."
  so searching the description finds the page. Plus `secondary_pages_per_entity` pages on
  medium (news: a subset of correct facts) or low (blog/forum) domains; a low page carries, with
  probability `conflict_rate`, ONE wrong or stale numeric attribute recorded as Claim(correct=False).
* Claim.value is the tail entity id for relations and str(value) for attributes (counts are
  rendered "4,200" in text, see `format_value`). Pages link (Document.links) to the reference pages
  of the entities they mention.

Only `random.Random(cfg.seed)` drives choices (no hash(), no set iteration), so the same config
gives the same bytes. Work per page is a few string formats: a million-paragraph world takes
about 50 s on one core (benchmarks/search_bench.py).
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deepresearch.world.schema import Claim, Document, Entity, EntityType, Tier, Triple, World

if TYPE_CHECKING:
    from deepresearch.config import WorldConfig
    from deepresearch.world.authority import AuthorityRegistry

# Types in generation order: entity ids are assigned type block by type block in this order.
ENTITY_TYPES: tuple[EntityType, ...] = (
    EntityType.person,
    EntityType.organization,
    EntityType.place,
    EntityType.work,
    EntityType.event,
    EntityType.product,
)


@dataclass(frozen=True)
class RelationSpec:
    """A typed relation; `probability` is the chance an entity of `head` type has it."""

    name: str
    head: EntityType
    tail: EntityType
    probability: float


# Order matters twice: facts are stated in this order, and descriptions that need disambiguation
# add relation phrases in this order (the least "answer-like" relation of each type comes first).
RELATIONS: tuple[RelationSpec, ...] = (
    RelationSpec("born_in", EntityType.person, EntityType.place, 1.0),
    RelationSpec("educated_at", EntityType.person, EntityType.organization, 0.6),
    RelationSpec("works_for", EntityType.person, EntityType.organization, 0.85),
    RelationSpec("headquartered_in", EntityType.organization, EntityType.place, 1.0),
    RelationSpec("founded_by", EntityType.organization, EntityType.person, 0.8),
    RelationSpec("published_by", EntityType.work, EntityType.organization, 0.75),
    RelationSpec("created_by", EntityType.work, EntityType.person, 1.0),
    RelationSpec("held_in", EntityType.event, EntityType.place, 1.0),
    RelationSpec("organized_by", EntityType.event, EntityType.organization, 0.8),
    RelationSpec("made_by", EntityType.product, EntityType.organization, 1.0),
    RelationSpec("designed_by", EntityType.product, EntityType.person, 0.7),
)
RELATIONS_BY_HEAD: dict[EntityType, tuple[RelationSpec, ...]] = {
    t: tuple(r for r in RELATIONS if r.head == t) for t in ENTITY_TYPES
}

ATTRIBUTES: dict[EntityType, tuple[str, ...]] = {
    EntityType.person: ("birth_year", "occupation"),
    EntityType.organization: ("founded_year", "industry", "employees"),
    EntityType.place: ("population", "region"),
    EntityType.work: ("year", "genre"),
    EntityType.event: ("year", "attendance"),
    EntityType.product: ("launch_year", "category"),
}
COUNT_ATTRIBUTES = frozenset({"employees", "population", "attendance"})
YEAR_ATTRIBUTES = frozenset({"birth_year", "founded_year", "year", "launch_year"})
# Numeric attributes a low-authority page may get wrong. The event year is left out: it is part
# of the event's name, so a page contradicting it would contradict itself.
CONFLICTABLE: dict[EntityType, tuple[str, ...]] = {
    EntityType.person: ("birth_year",),
    EntityType.organization: ("founded_year", "employees"),
    EntityType.place: ("population",),
    EntityType.work: ("year",),
    EntityType.event: ("attendance",),
    EntityType.product: ("launch_year",),
}

LATEST_YEAR = 2024

# ---- vocabularies -------------------------------------------------------------------------------
# fmt: off
_ONSETS = ("b", "br", "c", "ch", "d", "dr", "f", "fl", "g", "gr", "h", "j", "k", "kr", "l", "m", "n",
           "p", "pr", "qu", "r", "s", "sh", "st", "t", "th", "tr", "v", "w", "z")
_NUCLEI = ("a", "e", "i", "o", "u", "a", "e", "o", "ae", "ia", "ou", "ei")
_CODAS = ("", "", "", "n", "r", "l", "s", "x", "m", "nd", "rn", "th", "sk", "lt")
# Coined words must never be ordinary English (a stopword name would be unsearchable).
_REJECT_WORDS = frozenset((
    "about", "above", "after", "again", "against", "also", "among", "another", "around", "because", "been",
    "before", "being", "below", "between", "both", "could", "does", "doing", "down", "during", "each",
    "either", "every", "from", "further", "have", "having", "here", "into", "itself", "just", "many",
    "more", "most", "much", "must", "neither", "none", "only", "other", "over", "same", "shall", "should",
    "some", "such", "than", "that", "their", "them", "then", "there", "these", "they", "this", "those",
    "through", "under", "until", "upon", "very", "were", "what", "when", "where", "which", "while", "whom",
    "whose", "will", "with", "within", "without", "would", "your",
))
OCCUPATIONS = ("chemist", "architect", "novelist", "physicist", "painter", "engineer", "economist",
               "composer", "historian", "biologist", "journalist", "mathematician", "photographer",
               "sculptor", "astronomer", "linguist", "surgeon", "diplomat", "film director", "botanist",
               "geologist", "poet", "cartographer", "philosopher", "playwright", "urban planner",
               "pianist", "archaeologist", "statistician", "choreographer")
INDUSTRIES = ("robotics", "pharmaceutical", "publishing", "shipping", "software", "aerospace", "textile",
              "food processing", "renewable energy", "biotechnology", "mining", "telecommunications",
              "furniture", "glassmaking", "toy", "brewing", "semiconductor", "insurance", "logistics",
              "film production", "medical device", "railway", "chemical", "video game")
_ORG_SUFFIXES = ("Labs", "Institute", "Group", "Industries", "Systems", "Works", "Holdings", "Foundation",
                 "Company", "Partners", "Studios", "Press", "Collective", "Corporation", "Society",
                 "Academy")
REGIONS = ("North Coast", "Eastern Highlands", "Central Plains", "Southern Lakes", "Western Valleys",
           "Upper Delta", "River Basin", "Outer Islands", "High Plateau", "Lower Steppe",
           "Northern Forests", "Southern Marches")
# (genre, the verb its year goes with)
GENRES = (("mystery novel", "published"), ("science fiction novel", "published"),
          ("poetry collection", "published"), ("historical novel", "published"),
          ("graphic novel", "published"), ("short story collection", "published"),
          ("biography", "published"), ("documentary film", "released"), ("feature film", "released"),
          ("animated film", "released"), ("concept album", "released"), ("video game", "released"),
          ("opera", "premiered"), ("symphony", "premiered"), ("stage play", "premiered"),
          ("ballet", "premiered"))
EVENT_KINDS = ("Film Festival", "Science Fair", "Book Fair", "Jazz Festival", "Marathon", "Chess Open",
               "Trade Expo", "Design Week", "Robotics Summit", "Poetry Festival", "Architecture Biennale",
               "Music Awards", "Food Festival", "Games Convention", "Photography Salon", "Sailing Regatta")
PRODUCT_CATEGORIES = ("smartphone", "electric bicycle", "camera drone", "espresso machine", "3D printer",
                      "smartwatch", "synthesizer", "microscope", "e-reader", "robot vacuum",
                      "electric scooter", "gaming console", "hearing aid", "telescope", "sewing machine",
                      "air purifier", "solar lantern", "drawing tablet")
_TITLE_ADJ = ("Silent", "Hidden", "Broken", "Golden", "Distant", "Burning", "Quiet", "Hollow", "Crimson",
              "Endless", "Forgotten", "Northern", "Paper", "Glass", "Iron", "Last", "Second", "Winter",
              "Midnight", "Little", "Wandering", "Sleeping", "Secret", "Painted", "Fallen", "Bright",
              "Lonely", "Ancient", "Restless", "Velvet", "Copper", "Amber", "Silver", "Shifting",
              "Drowned", "Narrow", "Patient", "Scarlet", "Frozen", "Wild")
_TITLE_NOUN = ("Harbor", "Garden", "Lantern", "River", "Orchard", "Mirror", "Tower", "Letter", "Island",
               "Archive", "Bridge", "Compass", "Meadow", "Season", "Kingdom", "Voyage", "Window", "Engine",
               "Shore", "Forest", "Lighthouse", "Theory", "Empire", "Machine", "Atlas", "Choir", "Station",
               "Carnival", "Frontier", "Labyrinth", "Cathedral", "Orchestra", "Horizon", "Signal",
               "Caravan", "Citadel", "Witness", "Stranger", "Daughter", "Clockmaker")
# fmt: on
_GENRE_VERB = dict(GENRES)

# ---- sentence templates -------------------------------------------------------------------------
# Every fact sentence starts with the entity's name, so each paragraph is findable by name and a
# casual prefix ("Apparently, ") can be put in front of any of them.
_FACT_TEMPLATES: dict[tuple[EntityType, str], str] = {
    (EntityType.person, "birth_year"): "{name} was born in the year {value}.",
    (EntityType.person, "occupation"): "{name} worked as {a_value}.",
    (EntityType.person, "born_in"): "{name} was born in the town of {value}.",
    (EntityType.person, "educated_at"): "{name} was educated at {value}.",
    (EntityType.person, "works_for"): "{name} works for {value}.",
    (EntityType.organization, "founded_year"): "{name} was founded in {value}.",
    (EntityType.organization, "industry"): "{name} operates in the {value} industry.",
    (EntityType.organization, "employees"): "{name} employs {value} people.",
    (EntityType.organization, "headquartered_in"): "{name} is headquartered in {value}.",
    (EntityType.organization, "founded_by"): "{name} was founded by {value}.",
    (EntityType.place, "population"): "{name} has a population of {value}.",
    (EntityType.place, "region"): "{name} lies in the {value} region.",
    (EntityType.work, "year"): "{name} was first {verb} in {value}.",
    (EntityType.work, "genre"): "{name} is {a_value}.",
    (EntityType.work, "published_by"): "{name} was published by {value}.",
    (EntityType.work, "created_by"): "{name} was created by {value}.",
    (EntityType.event, "year"): "{name} took place in {value}.",
    (EntityType.event, "attendance"): "{name} drew an attendance of {value}.",
    (EntityType.event, "held_in"): "{name} was held in {value}.",
    (EntityType.event, "organized_by"): "{name} was organized by {value}.",
    (EntityType.product, "launch_year"): "{name} was launched in {value}.",
    (EntityType.product, "category"): "{name} is {a_value}.",
    (EntityType.product, "made_by"): "{name} is made by {value}.",
    (EntityType.product, "designed_by"): "{name} was designed by {value}.",
}
_PREFIXES = {
    Tier.high: ("",),
    Tier.medium: (
        "",
        "",
        "According to records, ",
        "Reports confirm that ",
        "As noted in earlier coverage, ",
    ),
    Tier.low: (
        "",
        "Apparently, ",
        "I read somewhere that ",
        "If I remember right, ",
        "Someone told me that ",
    ),
}
_INTROS = {
    "news": (
        "{name} has been in the news again.",
        "Here is a short profile of {name}.",
        "Readers asked us about {name}.",
        "Our newsroom looked into {name}.",
    ),
    "blog": (
        "Some notes I collected about {name}.",
        "A quick write-up on {name}.",
        "I finally read up on {name}.",
    ),
    "forum": (
        "Has anyone looked into {name}?",
        "Question about {name}, what do you all know?",
        "Thread: everything about {name}.",
    ),
}
_FILLER = {
    Tier.high: (
        "The record was last reviewed by the editorial board.",
        "Sources for this entry are listed in the catalogue.",
        "Further material is held in the institutional archive.",
        "This entry follows the standard documentation guidelines.",
    ),
    Tier.medium: (
        "More coverage is expected in the coming weeks.",
        "Our correspondents followed the story closely.",
        "This article has been updated since it was first published.",
    ),
    Tier.low: (
        "Feel free to correct me in the comments.",
        "I might be misremembering some details.",
        "Thanks for reading, more posts soon.",
        "Not sure how reliable my sources are.",
    ),
}
_NAME_FILLER = {
    Tier.high: (
        "Additional records about {name} are kept in the archive.",
        "The documentation on {name} is reviewed periodically.",
    ),
    Tier.medium: ("We will keep following {name}.", "{name} did not respond to a request for comment."),
    Tier.low: ("That is all I know about {name}.", "Anyone else have thoughts on {name}?"),
}
_TITLES = {
    "government": "{name}: official record",
    "academic": "{name} (archive entry)",
    "institutional": "{name} catalogue entry",
    "news": "{name}: {headline}",
    "blog": "My notes on {name}",
    "forum": "Anyone know about {name}?",
}
_HEADLINES = ("what we know", "a closer look", "in the news", "the story so far")


def format_value(attribute: str, value: str | int) -> str:
    """How an attribute value is written in page text: counts get thousands separators ("4,200")."""
    if attribute in COUNT_ATTRIBUTES and isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _pick(rng: random.Random, seq):
    # rng.choice costs several Python calls; one random() is enough on the page-rendering hot path.
    return seq[int(rng.random() * len(seq))]


def _a(phrase: str) -> str:
    return ("an " if phrase[0].lower() in "aeiou" else "a ") + phrase


def _round_sig(x: float, digits: int) -> int:
    if x <= 0:
        return 1
    scale = 10 ** max(0, math.floor(math.log10(x)) - digits + 1)
    return max(1, round(x / scale) * scale)


def _log_uniform(rng: random.Random, lo: float, hi: float, digits: int) -> int:
    return _round_sig(math.exp(rng.uniform(math.log(lo), math.log(hi))), digits)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "page"


# ---- names --------------------------------------------------------------------------------------
class _Namer:
    """Coins pronounceable words; a word is handed out once across the whole world."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()  # membership only: never iterated, so order cannot leak in

    def coin(self, min_syll: int = 2, max_syll: int = 3) -> tuple[str, list[str]]:
        """A fresh capitalised word and its syllables."""
        rng = self.rng
        while True:
            n = rng.randint(min_syll, max_syll)
            sylls = []
            for i in range(n):
                s = rng.choice(_ONSETS) + rng.choice(_NUCLEI)
                if i == n - 1:
                    s += rng.choice(_CODAS)
                elif rng.random() < 0.2:
                    s += rng.choice(("l", "n", "r"))
                sylls.append(s)
            word = "".join(sylls)
            if len(word) < 4 or word in _REJECT_WORDS or word in self.used:
                continue
            self.used.add(word)
            return word.capitalize(), sylls


@dataclass
class _Ent:
    """Mutable working record of one entity while the world is being generated."""

    idx: int
    type: EntityType
    name: str
    aliases: list[str]
    attrs: dict[str, str | int]
    rels: dict[str, int]  # relation name -> tail entity index
    description: str = ""
    coined: str = ""  # the coined word of org/event/product names (for aliases)
    sylls: tuple[str, ...] = ()
    extra: str = ""  # event kind / org suffix / person first name

    @property
    def id(self) -> str:
        return f"E{self.idx + 1:06d}"


def _make_names(rng: random.Random, namer: _Namer, n: int) -> dict[EntityType, list[_Ent]]:
    ents: dict[EntityType, list[_Ent]] = {}
    idx = 0
    taken: set[str] = set()

    def new(t: EntityType, name: str, **kw) -> _Ent:
        nonlocal idx
        e = _Ent(idx=idx, type=t, name=name, aliases=[], attrs={}, rels={}, **kw)
        idx += 1
        taken.add(name)
        return e

    # Persons: first/last names drawn from coined pools, so surnames recur as they do in life.
    n_first = max(24, math.ceil(math.sqrt(n) * 1.5))
    n_last = max(32, math.ceil(math.sqrt(n) * 3))
    firsts = [namer.coin(2, 2)[0] for _ in range(n_first)]
    lasts = [namer.coin(2, 3)[0] for _ in range(n_last)]
    people = []
    while len(people) < n:
        first, last = rng.choice(firsts), rng.choice(lasts)
        name = f"{first} {last}"
        if name not in taken:
            people.append(new(EntityType.person, name, extra=first))
    ents[EntityType.person] = people

    orgs = []
    for _ in range(n):
        word, sylls = namer.coin(2, 3)
        suffix = rng.choice(_ORG_SUFFIXES)
        orgs.append(
            new(EntityType.organization, f"{word} {suffix}", coined=word, sylls=tuple(sylls), extra=suffix)
        )
    ents[EntityType.organization] = orgs

    ents[EntityType.place] = [new(EntityType.place, namer.coin(2, 3)[0]) for _ in range(n)]

    works = []
    while len(works) < n:
        r = rng.random()
        if r < 0.5:
            title = f"The {rng.choice(_TITLE_ADJ)} {rng.choice(_TITLE_NOUN)}"
            if title in taken:
                continue  # the plain pattern runs out on big worlds; the coined ones never do
        elif r < 0.75:
            title = f"The {rng.choice(_TITLE_NOUN)} of {namer.coin(2, 3)[0]}"
        elif r < 0.9:
            title = f"A {rng.choice(_TITLE_NOUN)} for {namer.coin(2, 3)[0]}"
        else:
            title = f"The {rng.choice(_TITLE_ADJ)} {rng.choice(_TITLE_NOUN)} of {namer.coin(2, 3)[0]}"
        works.append(new(EntityType.work, title))
    ents[EntityType.work] = works

    # Events get their year appended once attributes exist; the coined word keeps names unique.
    events = []
    for _ in range(n):
        word, _s = namer.coin(2, 3)
        kind = rng.choice(EVENT_KINDS)
        events.append(new(EntityType.event, f"{word} {kind}", coined=word, extra=kind))
    ents[EntityType.event] = events

    products = []
    for _ in range(n):
        word, _s = namer.coin(2, 3)
        model = f"{rng.choice('XSMQRTZV')}{rng.choice((rng.randint(1, 9), rng.randint(10, 99) * 10))}"
        products.append(new(EntityType.product, f"{word} {model}", coined=word))
    ents[EntityType.product] = products
    return ents


# ---- relations and attributes -------------------------------------------------------------------
class _Deck:
    """Draws tails from a shuffled deck, reshuffled when empty: in-degrees stay even."""

    def __init__(self, rng: random.Random, n: int):
        self.rng, self.n, self.cards = rng, n, []

    def draw(self) -> int:
        if not self.cards:
            self.cards = list(range(self.n))
            self.rng.shuffle(self.cards)
        return self.cards.pop()


def _draw_attr(rng: random.Random, e: _Ent, attr: str, ents: dict[EntityType, list[_Ent]]) -> str | int:
    """A fresh true value for one attribute, consistent with already-drawn related entities."""
    t = e.type
    if attr == "birth_year":
        return rng.randint(1900, 1995)
    if attr == "occupation":
        return rng.choice(OCCUPATIONS)
    if attr == "founded_year":
        founder = e.rels.get("founded_by")
        if founder is not None:
            born = ents[EntityType.person][founder].attrs["birth_year"]
            return min(2018, int(born) + rng.randint(25, 60))
        return rng.randint(1850, 2015)
    if attr == "industry":
        return rng.choice(INDUSTRIES)
    if attr == "employees":
        return _log_uniform(rng, 12, 240_000, 2)
    if attr == "population":
        return _log_uniform(rng, 800, 9_000_000, 3)
    if attr == "region":
        return rng.choice(REGIONS)
    if attr == "genre":
        return rng.choice(GENRES)[0]
    if attr == "year" and t == EntityType.work:
        born = int(ents[EntityType.person][e.rels["created_by"]].attrs["birth_year"])
        return min(LATEST_YEAR - 1, born + rng.randint(22, 70))
    if attr == "year" and t == EntityType.event:
        org = e.rels.get("organized_by")
        lo = 1950
        if org is not None:
            lo = max(lo, int(ents[EntityType.organization][org].attrs["founded_year"]) + 1)
        return rng.randint(min(lo, LATEST_YEAR - 1), LATEST_YEAR - 1)
    if attr == "attendance":
        return _log_uniform(rng, 150, 450_000, 2)
    if attr == "launch_year":
        maker = int(ents[EntityType.organization][e.rels["made_by"]].attrs["founded_year"])
        return rng.randint(min(max(1960, maker + 1), LATEST_YEAR - 1), LATEST_YEAR - 1)
    if attr == "category":
        return rng.choice(PRODUCT_CATEGORIES)
    raise AssertionError(f"no generator for attribute {attr!r} of {t.value}")  # a bug in ATTRIBUTES


def _make_aliases(ents: dict[EntityType, list[_Ent]]) -> None:
    taken = {e.name for es in ents.values() for e in es}  # membership only
    for t in ENTITY_TYPES:
        for e in ents[t]:
            if t == EntityType.person:
                cands = [f"{e.extra[0]}. {e.name.split(' ', 1)[1]}"]
            elif t == EntityType.organization:
                cands = ["".join(s[0] for s in e.sylls).upper() + "".join(w[0] for w in e.extra.split())]
            elif t == EntityType.event:
                cands = [f"{e.coined} {e.extra}"]
            elif t == EntityType.product:
                cands = [e.coined]
            else:
                cands = []
            for c in cands:
                if c not in taken:  # ambiguous aliases would make answer matching unsound
                    taken.add(c)
                    e.aliases.append(c)


# ---- descriptions -------------------------------------------------------------------------------
def _description_variants(e: _Ent, ents: dict[EntityType, list[_Ent]]) -> list[str]:
    """Descriptions from least to most specific; never containing the entity's own name."""
    a, t = e.attrs, e.type

    def tail(rel: str, tail_type: EntityType) -> str:
        return ents[tail_type][e.rels[rel]].name

    if t == EntityType.person:
        base = [f"{_a(str(a['occupation']))} born in {a['birth_year']}"]
        phrases = {
            "born_in": lambda: f" in {tail('born_in', EntityType.place)}",
            "educated_at": lambda: f", educated at {tail('educated_at', EntityType.organization)}",
            "works_for": lambda: f", who worked for {tail('works_for', EntityType.organization)}",
        }
    elif t == EntityType.organization:
        b0 = f"{_a(str(a['industry']))} company founded in {a['founded_year']}"
        base = [b0, f"{b0} with {format_value('employees', a['employees'])} employees"]
        phrases = {
            "headquartered_in": lambda: f", headquartered in {tail('headquartered_in', EntityType.place)}",
            "founded_by": lambda: f", established by {tail('founded_by', EntityType.person)}",
        }
    elif t == EntityType.place:
        pop = int(a["population"])
        kind = "village" if pop < 10_000 else "town" if pop < 100_000 else "city"
        base = [
            f"{_a(kind)} in the {a['region']} region with a population of {format_value('population', pop)}"
        ]
        phrases = {}
    elif t == EntityType.work:
        genre = str(a["genre"])
        base = [f"{_a(genre)} {_GENRE_VERB[genre]} in {a['year']}"]
        phrases = {
            "published_by": lambda: f", issued by {tail('published_by', EntityType.organization)}",
            "created_by": lambda: f", created by {tail('created_by', EntityType.person)}",
        }
    elif t == EntityType.event:
        b0 = f"{_a(e.extra.lower())} held in {a['year']}"
        base = [b0, f"{b0} with {format_value('attendance', a['attendance'])} attendees"]
        phrases = {
            "held_in": lambda: f", hosted in {tail('held_in', EntityType.place)}",
            "organized_by": lambda: f", organized by {tail('organized_by', EntityType.organization)}",
        }
    else:
        base = [f"{_a(str(a['category']))} launched in {a['launch_year']}"]
        phrases = {
            "made_by": lambda: f", made by {tail('made_by', EntityType.organization)}",
            "designed_by": lambda: f", designed by {tail('designed_by', EntityType.person)}",
        }
    out = list(base)
    cur = base[-1]
    for spec in RELATIONS_BY_HEAD[t]:
        if spec.name in e.rels:
            cur += phrases[spec.name]()
            out.append(cur)
    return out


def _assign_descriptions(rng: random.Random, ents: dict[EntityType, list[_Ent]]) -> None:
    """Give every entity the shortest description that is unique in the world.

    All members of a colliding group move one level more specific, until nothing collides or
    a group is out of levels; the few left then get a numeric attribute re-drawn (before any
    page is rendered, so pages stay consistent with the true values).
    """
    flat = [e for t in ENTITY_TYPES for e in ents[t]]
    variants = [_description_variants(e, ents) for e in flat]
    level = [0] * len(flat)
    desc = [v[0] for v in variants]
    changed = True
    while changed:
        changed = False
        counts = Counter(desc)
        for i, d in enumerate(desc):
            if counts[d] > 1 and level[i] < len(variants[i]) - 1:
                level[i] += 1
                desc[i] = variants[i][level[i]]
                changed = True
    owner: dict[str, int] = {}
    for i, e in enumerate(flat):
        while desc[i] in owner:
            attr = CONFLICTABLE[e.type][-1]
            e.attrs[attr] = _draw_attr(rng, e, attr, ents)
            desc[i] = _description_variants(e, ents)[level[i]]
        owner[desc[i]] = i
        e.description = desc[i]


# ---- documents ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Fact:
    predicate: str
    claim_value: str  # tail entity id or str(value)
    display: str  # what the page text says
    link: str | None  # doc id of the tail's reference page
    numeric: int | None  # for attributes that can be stated wrong


def fact_words(t: EntityType, predicate: str) -> str | None:
    """The words a synthetic page writes between an entity's name and a fact's value: `was founded by`
    for (organization, founded_by), `was born in the year` for (person, birth_year); None for a fact
    without a sentence template (loaded worlds). A search for the name and these words finds the
    paragraph that states the fact."""
    template = _FACT_TEMPLATES.get((t, predicate))
    if template is None:
        return None
    return template.removeprefix("{name} ").split("{")[0].strip()


def _fact_sentence(t: EntityType, pred: str, name: str, display: str, verb: str) -> str:
    return _FACT_TEMPLATES[(t, pred)].format(name=name, value=display, a_value=_a(display), verb=verb)


def _wrong_value(rng: random.Random, attr: str, true: int) -> int:
    """A plausible wrong value: a year off by 1-6, or an old (smaller) count."""
    if attr in YEAR_ATTRIBUTES:
        return true + rng.choice((-1, 1)) * rng.randint(1, 6)
    stale = _round_sig(true * rng.uniform(0.35, 0.85), 2)
    return stale if stale != true else max(1, true - 1)


class _Pages:
    """Renders the pages of one world; keeps the registry lookups and the doc ids."""

    def __init__(self, rng: random.Random, cfg: WorldConfig, registry: AuthorityRegistry, ents):
        self.rng, self.cfg, self.ents = rng, cfg, ents
        self.pages_per_entity = 1 + cfg.secondary_pages_per_entity
        self.domains = {t: registry.domains_by_tier(t) for t in Tier}
        self.authority = {d: registry.authority(d) for t in Tier for d in self.domains[t]}
        self.kind = {d: registry.entry(d).kind for t in Tier for d in self.domains[t]}  # type: ignore[union-attr]

        # A page's id is its entity's name as a slug plus the page number ("preiraer-0" is the reference
        # page, "preiraer-1" the first secondary one), the path of its URL. An agent opens and cites a page
        # by copying its id out of a search result: a name-like id is copied as names are, where a number
        # ("D0002677") is a run of digit tokens that a small model confuses with the other hits' ids
        # (next-action probe after the same SFT: 1 % of numeric ids opened right, 72 % of slugs).
        self.slugs: dict[int, str] = {}
        seen: set[str] = set()
        for es in ents.values():
            for e in es:
                slug = _slug(e.name)
                if slug in seen:  # two names with one slug: the later entity's id gets its index
                    slug = f"{slug}-e{e.idx}"
                seen.add(slug)
                self.slugs[e.idx] = slug

    def doc_id(self, entity_idx: int, page: int) -> str:
        return f"{self.slugs[entity_idx]}-{page}"

    def facts(self, e: _Ent) -> list[_Fact]:
        out = []
        for attr in ATTRIBUTES[e.type]:
            v = e.attrs[attr]
            out.append(_Fact(attr, str(v), format_value(attr, v), None, v if isinstance(v, int) else None))
        for spec in RELATIONS_BY_HEAD[e.type]:
            if spec.name in e.rels:
                tail = self.ents[spec.tail][e.rels[spec.name]]
                out.append(_Fact(spec.name, tail.id, tail.name, self.doc_id(tail.idx, 0), None))
        return out

    def render(self, e: _Ent) -> list[Document]:
        facts = self.facts(e)
        latest = max((int(e.attrs[a]) for a in ATTRIBUTES[e.type] if a in YEAR_ATTRIBUTES), default=1990)
        docs = [self._reference(e, facts, latest)]
        for page in range(1, self.pages_per_entity):
            docs.append(self._secondary(e, facts, page, latest))
        return docs

    def _paragraphs(
        self,
        e: _Ent,
        tier: Tier,
        intro: list[str],
        stated: list[tuple[_Fact, str, bool]],
        prefixes: tuple[str, ...],
    ) -> tuple[list[str], list[Claim], list[str]]:
        """Spread the stated facts over the page's paragraphs; one Claim per stated fact."""
        rng, p = self.rng, self.cfg.paragraphs_per_page
        verb = _GENRE_VERB.get(str(e.attrs.get("genre", "")), "published")
        paras: list[list[str]] = [[] for _ in range(p)]
        paras[0].extend(intro)
        claims, links = [], []
        n = len(stated)
        for j, (fact, display, correct) in enumerate(stated):
            i = j * p // n if n else 0
            paras[i].append(
                _pick(rng, prefixes) + _fact_sentence(e.type, fact.predicate, e.name, display, verb)
            )
            value = fact.claim_value if correct else display.replace(",", "")
            claims.append(
                Claim(subject=e.id, predicate=fact.predicate, value=value, correct=correct, paragraph=i)
            )
            if fact.link and fact.link not in links:
                links.append(fact.link)
        # Fillers rotate from a random start so one page never repeats a sentence.
        name_fill, fill = _NAME_FILLER[tier], _FILLER[tier]
        a, b = rng.randrange(len(name_fill)), rng.randrange(len(fill))
        for sents in paras:
            if not sents:
                sents.append(name_fill[a % len(name_fill)].format(name=e.name))
                a += 1
            if rng.random() < 0.35:
                sents.append(fill[b % len(fill)])
                b += 1
        return [" ".join(s) for s in paras], claims, links

    def _reference(self, e: _Ent, facts: list[_Fact], latest: int) -> Document:
        rng = self.rng
        domain = _pick(rng, self.domains[Tier.high])
        doc_id = self.doc_id(e.idx, 0)
        intro = [f"{e.name} is {e.description}."]
        if e.aliases:
            intro.append(f"{e.name} is also known as {' or '.join(e.aliases)}.")
        stated = [(f, f.display, True) for f in facts]
        paragraphs, claims, links = self._paragraphs(e, Tier.high, intro, stated, _PREFIXES[Tier.high])
        return Document(
            doc_id=doc_id,
            url=f"https://{domain}/{doc_id}",
            domain=domain,
            tier=Tier.high,
            authority=self.authority[domain],
            title=_TITLES.get(self.kind[domain], "{name}").format(name=e.name, headline=""),
            paragraphs=paragraphs,
            about=e.id,
            links=links,
            claims=claims,
            year=min(LATEST_YEAR, max(rng.randint(2018, LATEST_YEAR), latest + 1)),
        )

    def _secondary(self, e: _Ent, facts: list[_Fact], page: int, latest: int) -> Document:
        rng = self.rng
        tier = Tier.medium if rng.random() < 0.4 else Tier.low
        domain = _pick(rng, self.domains[tier])
        kind = self.kind[domain]
        doc_id = self.doc_id(e.idx, page)
        chosen = [i for i in range(len(facts)) if rng.random() < 0.6] or [int(rng.random() * len(facts))]
        wrong_attr = None
        if tier == Tier.low and rng.random() < self.cfg.conflict_rate:
            wrong_attr = _pick(rng, CONFLICTABLE[e.type])
            pos = next(i for i, f in enumerate(facts) if f.predicate == wrong_attr)
            if pos not in chosen:
                chosen = sorted([*chosen, pos])
        stated = []
        for i in chosen:
            f = facts[i]
            if f.predicate == wrong_attr and f.numeric is not None:
                stated.append(
                    (f, format_value(f.predicate, _wrong_value(rng, f.predicate, f.numeric)), False)
                )
            else:
                stated.append((f, f.display, True))
        intro_kind = kind if kind in _INTROS else ("news" if tier == Tier.medium else "blog")
        intro = [_pick(rng, _INTROS[intro_kind]).format(name=e.name)]
        paragraphs, claims, links = self._paragraphs(e, tier, intro, stated, _PREFIXES[tier])
        ref = self.doc_id(e.idx, 0)
        links = [ref, *(x for x in links if x != ref)]  # secondary pages cite the reference page
        if wrong_attr is not None:
            year = rng.randint(1999, 2012)  # a wrong value usually sits on an old, stale page
        else:
            year = min(LATEST_YEAR, max(rng.randint(2004, LATEST_YEAR), latest + 1))
        return Document(
            doc_id=doc_id,
            url=f"https://{domain}/{doc_id}",
            domain=domain,
            tier=tier,
            authority=self.authority[domain],
            title=_TITLES.get(kind, "{name}").format(name=e.name, headline=_pick(rng, _HEADLINES)),
            paragraphs=paragraphs,
            about=e.id,
            links=links,
            claims=claims,
            year=year,
        )


# ---- entry point --------------------------------------------------------------------------------
def generate_world(cfg: WorldConfig, registry: AuthorityRegistry | None = None) -> World:
    """Generate the synthetic world described in the module docstring.

    Args:
        cfg: world section of the config (seed, sizes, conflict rate, paragraphs per page).
        registry: authority list; default loaded from `cfg.authority_registry`.
    Returns:
        The World (source "synthetic", seed cfg.seed); same cfg → same `World.save` bytes.
    """
    from deepresearch.world.authority import load_authority_registry

    registry = registry if registry is not None else load_authority_registry(cfg.authority_registry)
    rng = random.Random(cfg.seed)
    n = cfg.entities_per_type
    ents = _make_names(rng, _Namer(rng), n)

    decks = {t: _Deck(rng, n) for t in ENTITY_TYPES}
    for t in ENTITY_TYPES:
        for e in ents[t]:
            for spec in RELATIONS_BY_HEAD[t]:
                if spec.probability >= 1.0 or rng.random() < spec.probability:
                    e.rels[spec.name] = decks[spec.tail].draw()

    # Dependency order: founders before organizations, creators/organizers/makers before their works.
    for t in ENTITY_TYPES:
        for e in ents[t]:
            for attr in ATTRIBUTES[t]:
                e.attrs[attr] = _draw_attr(rng, e, attr, ents)
    for e in ents[EntityType.event]:
        e.name = f"{e.name} {e.attrs['year']}"

    _make_aliases(ents)
    _assign_descriptions(rng, ents)

    pages = _Pages(rng, cfg, registry, ents)
    entities, triples, documents = [], [], []
    for t in ENTITY_TYPES:
        for e in ents[t]:
            entities.append(
                Entity(
                    id=e.id,
                    type=t,
                    name=e.name,
                    aliases=e.aliases,
                    attributes=dict(e.attrs),
                    description=e.description,
                )
            )
            for spec in RELATIONS_BY_HEAD[t]:
                if spec.name in e.rels:
                    triples.append(
                        Triple(head=e.id, relation=spec.name, tail=ents[spec.tail][e.rels[spec.name]].id)
                    )
            documents.extend(pages.render(e))
    return World(entities, triples, documents, source="synthetic", seed=cfg.seed)
