"""Regenerate `capitals.jsonl`: a small offline multiple-choice benchmark of world capitals.

Only sovereign countries with one undisputed capital whose usual English spelling is plain
ASCII are kept (no Bolivia, Netherlands, South Africa, Israel, Switzerland, Indonesia, ...), so
both multiple-choice and exact-match scoring are unambiguous. The United States is left out
because "Washington, D.C." does not survive stopping generation at ".".
Distractors are other capitals from the list, seeded by the country name, so the file is
reproducible: `python make_capitals.py`.
"""

import json
import random
from pathlib import Path

CAPITALS: list[tuple[str, str]] = [
    # Europe
    ("Albania", "Tirana"),
    ("Andorra", "Andorra la Vella"),
    ("Armenia", "Yerevan"),
    ("Austria", "Vienna"),
    ("Azerbaijan", "Baku"),
    ("Belarus", "Minsk"),
    ("Belgium", "Brussels"),
    ("Bosnia and Herzegovina", "Sarajevo"),
    ("Bulgaria", "Sofia"),
    ("Croatia", "Zagreb"),
    ("Cyprus", "Nicosia"),
    ("Czech Republic", "Prague"),
    ("Denmark", "Copenhagen"),
    ("Estonia", "Tallinn"),
    ("Finland", "Helsinki"),
    ("France", "Paris"),
    ("Germany", "Berlin"),
    ("Greece", "Athens"),
    ("Hungary", "Budapest"),
    ("Ireland", "Dublin"),
    ("Italy", "Rome"),
    ("Latvia", "Riga"),
    ("Liechtenstein", "Vaduz"),
    ("Lithuania", "Vilnius"),
    ("Malta", "Valletta"),
    ("Montenegro", "Podgorica"),
    ("North Macedonia", "Skopje"),
    ("Norway", "Oslo"),
    ("Poland", "Warsaw"),
    ("Portugal", "Lisbon"),
    ("Romania", "Bucharest"),
    ("Russia", "Moscow"),
    ("Serbia", "Belgrade"),
    ("Slovakia", "Bratislava"),
    ("Slovenia", "Ljubljana"),
    ("Spain", "Madrid"),
    ("Sweden", "Stockholm"),
    ("United Kingdom", "London"),
    # Asia
    ("Afghanistan", "Kabul"),
    ("Bahrain", "Manama"),
    ("Bangladesh", "Dhaka"),
    ("Bhutan", "Thimphu"),
    ("Brunei", "Bandar Seri Begawan"),
    ("Cambodia", "Phnom Penh"),
    ("China", "Beijing"),
    ("India", "New Delhi"),
    ("Iran", "Tehran"),
    ("Iraq", "Baghdad"),
    ("Japan", "Tokyo"),
    ("Jordan", "Amman"),
    ("Kuwait", "Kuwait City"),
    ("Kyrgyzstan", "Bishkek"),
    ("Laos", "Vientiane"),
    ("Lebanon", "Beirut"),
    ("Nepal", "Kathmandu"),
    ("North Korea", "Pyongyang"),
    ("Oman", "Muscat"),
    ("Pakistan", "Islamabad"),
    ("Philippines", "Manila"),
    ("Qatar", "Doha"),
    ("Saudi Arabia", "Riyadh"),
    ("South Korea", "Seoul"),
    ("Syria", "Damascus"),
    ("Tajikistan", "Dushanbe"),
    ("Thailand", "Bangkok"),
    ("Turkey", "Ankara"),
    ("Turkmenistan", "Ashgabat"),
    ("United Arab Emirates", "Abu Dhabi"),
    ("Uzbekistan", "Tashkent"),
    ("Vietnam", "Hanoi"),
    # Africa
    ("Algeria", "Algiers"),
    ("Angola", "Luanda"),
    ("Botswana", "Gaborone"),
    ("Burkina Faso", "Ouagadougou"),
    ("Central African Republic", "Bangui"),
    ("Democratic Republic of the Congo", "Kinshasa"),
    ("Egypt", "Cairo"),
    ("Eritrea", "Asmara"),
    ("Ethiopia", "Addis Ababa"),
    ("Gabon", "Libreville"),
    ("Gambia", "Banjul"),
    ("Ghana", "Accra"),
    ("Guinea", "Conakry"),
    ("Guinea-Bissau", "Bissau"),
    ("Kenya", "Nairobi"),
    ("Lesotho", "Maseru"),
    ("Liberia", "Monrovia"),
    ("Libya", "Tripoli"),
    ("Madagascar", "Antananarivo"),
    ("Malawi", "Lilongwe"),
    ("Mali", "Bamako"),
    ("Mauritania", "Nouakchott"),
    ("Mauritius", "Port Louis"),
    ("Morocco", "Rabat"),
    ("Mozambique", "Maputo"),
    ("Namibia", "Windhoek"),
    ("Niger", "Niamey"),
    ("Nigeria", "Abuja"),
    ("Republic of the Congo", "Brazzaville"),
    ("Rwanda", "Kigali"),
    ("Senegal", "Dakar"),
    ("Sierra Leone", "Freetown"),
    ("Somalia", "Mogadishu"),
    ("South Sudan", "Juba"),
    ("Tunisia", "Tunis"),
    ("Uganda", "Kampala"),
    ("Zambia", "Lusaka"),
    ("Zimbabwe", "Harare"),
    # Americas
    ("Argentina", "Buenos Aires"),
    ("Bahamas", "Nassau"),
    ("Barbados", "Bridgetown"),
    ("Belize", "Belmopan"),
    ("Canada", "Ottawa"),
    ("Chile", "Santiago"),
    ("Cuba", "Havana"),
    ("Dominican Republic", "Santo Domingo"),
    ("Ecuador", "Quito"),
    ("El Salvador", "San Salvador"),
    ("Guatemala", "Guatemala City"),
    ("Guyana", "Georgetown"),
    ("Haiti", "Port-au-Prince"),
    ("Honduras", "Tegucigalpa"),
    ("Jamaica", "Kingston"),
    ("Mexico", "Mexico City"),
    ("Nicaragua", "Managua"),
    ("Panama", "Panama City"),
    ("Peru", "Lima"),
    ("Suriname", "Paramaribo"),
    ("Trinidad and Tobago", "Port of Spain"),
    ("Uruguay", "Montevideo"),
    ("Venezuela", "Caracas"),
    # Oceania
    ("Australia", "Canberra"),
    ("Fiji", "Suva"),
    ("New Zealand", "Wellington"),
    ("Papua New Guinea", "Port Moresby"),
    ("Samoa", "Apia"),
    ("Solomon Islands", "Honiara"),
    ("Vanuatu", "Port Vila"),
]

NUM_CHOICES = 4


def make_docs(capitals: list[tuple[str, str]] = CAPITALS) -> list[dict]:
    """One multiple-choice doc per country; distractors depend only on the country name."""
    all_capitals = sorted(capital for _, capital in capitals)
    assert len(set(all_capitals)) == len(all_capitals), "capitals must be unique"
    docs = []
    for country, capital in capitals:
        rng = random.Random(country)
        choices = rng.sample([c for c in all_capitals if c != capital], NUM_CHOICES - 1) + [capital]
        rng.shuffle(choices)
        docs.append({"country": country, "capital": capital, "choices": choices, "answer": choices.index(capital)})
    return docs


def main() -> None:
    path = Path(__file__).with_name("capitals.jsonl")
    docs = make_docs()
    with open(path, "w", encoding="utf-8") as f:
        for doc in docs:
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    print(f"wrote {len(docs)} docs to {path}")


if __name__ == "__main__":
    main()
