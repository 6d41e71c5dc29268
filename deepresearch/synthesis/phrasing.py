"""How relations and attributes of the world are named in questions, reports and rubrics.

Shared by task synthesis, the scripted expert and the rubric checks so that all three speak of a
fact the same way.
"""

from __future__ import annotations

RELATION_PHRASE: dict[str, str] = {
    "born_in": "birthplace",
    "works_for": "employer",
    "educated_at": "alma mater",
    "headquartered_in": "headquarters",
    "founded_by": "founder",
    "created_by": "creator",
    "published_by": "publisher",
    "held_in": "host city",
    "organized_by": "organizer",
    "made_by": "manufacturer",
    "designed_by": "designer",
}

ATTRIBUTE_PHRASE: dict[str, str] = {
    "birth_year": "birth year",
    "occupation": "occupation",
    "founded_year": "founding year",
    "industry": "industry",
    "employees": "number of employees",
    "population": "population",
    "region": "region",
    "year": "year",
    "genre": "genre",
    "attendance": "attendance",
    "launch_year": "launch year",
    "category": "category",
}

# Words that mark a sentence as reporting a claim in order to reject it (not asserting it).
REFUTATION_MARKERS = ("conflict", "incorrect", "wrong", "outdated", "stale", "disputed", "contradict")


def relation_phrase(relation: str) -> str:
    return RELATION_PHRASE.get(relation, relation.replace("_", " "))


def attribute_phrase(attribute: str) -> str:
    return ATTRIBUTE_PHRASE.get(attribute, attribute.replace("_", " "))


def value_variants(value: str | int) -> list[str]:
    """Spellings of a value a report may use: 4200 → ["4200", "4,200"]."""
    s = str(value)
    out = [s]
    if isinstance(value, int) or s.isdigit():
        n = int(s)
        if abs(n) >= 10_000 or (abs(n) >= 1000 and not 1000 <= n <= 2100):  # not a year
            out.append(f"{n:,}")
    return out


# How a report states a fact; {s} is the subject, {v} the value or related entity's name.
ATTRIBUTE_SENTENCE: dict[str, str] = {
    "birth_year": "{s} was born in {v}",
    "occupation": "{s} works as a {v}",
    "founded_year": "{s} was founded in {v}",
    "industry": "{s} operates in the {v} industry",
    "employees": "{s} has {v} employees",
    "population": "{s} has a population of {v}",
    "region": "{s} lies in the {v} region",
    "year": "{s} dates from {v}",
    "genre": "{s} belongs to the {v} genre",
    "attendance": "{s} drew an attendance of {v}",
    "launch_year": "{s} was launched in {v}",
    "category": "{s} is a {v}",
}
RELATION_SENTENCE: dict[str, str] = {
    "born_in": "{s} was born in {v}",
    "works_for": "{s} works for {v}",
    "educated_at": "{s} studied at {v}",
    "headquartered_in": "{s} is headquartered in {v}",
    "founded_by": "{s} was founded by {v}",
    "created_by": "{s} was created by {v}",
    "published_by": "{s} was published by {v}",
    "held_in": "{s} was held in {v}",
    "organized_by": "{s} was organized by {v}",
    "made_by": "{s} is made by {v}",
    "designed_by": "{s} was designed by {v}",
}


def attribute_sentence(attribute: str, subject: str, value: object) -> str:
    template = ATTRIBUTE_SENTENCE.get(attribute, "The " + attribute_phrase(attribute) + " of {s} is {v}")
    return template.format(s=subject, v=value)


def relation_sentence(relation: str, subject: str, value: str) -> str:
    template = RELATION_SENTENCE.get(relation, "The " + relation_phrase(relation) + " of {s} is {v}")
    return template.format(s=subject, v=value)
