"""Write the bundled sample feed (``sample_posts.jsonl``) and its malformed twin (``malformed_posts.jsonl``).

Why generated and not collected: the demo and the tests need a few hundred posts that read like a real
feed (slang, hashtags, @mentions, typos, emoji, a few other languages) but that we may ship under the
project's licence.  Every post here is written for the project: hand-written templates, slot filling and
a little noise, driven by a fixed seed and a fixed base time, so the file is byte-for-byte reproducible::

    python connectors/samples/generate_samples.py          # rewrite both files
    python connectors/samples/generate_samples.py --check  # exit 1 if the committed files are stale

What the feed contains (the tests and ``sentistream demo`` rely on it):

* five monitored topics: ``acme-phone`` (a phone launch), ``skyways-airline`` (an airline),
  ``cup-final`` (a football final), ``metro-strike`` (a city transit strike) and ``starfall-series``
  (a streaming show's finale), each with its own mix of positive / neutral / negative posts, spread over
  the three hours before ``BASE_TIME`` on twitter, reddit, bluesky and mastodon;
* one clear negative burst: ``skyways-airline`` suffers a check-in and app outage between
  ``BURST_START`` and ``BURST_END`` (15 minutes), with ``BURST_POSTS`` extra posts, almost all negative,
  against a baseline of about one post every three minutes for that topic;
* about 30 % of posts carry image media at ``http://{MEDIA_HOST}/img/<name>.jpg``; the demo serves those
  names (``stream.demo_media``) and substitutes the placeholder;
* ``raw`` holds the generator's own annotation (``intended_sentiment``, ``in_burst``) so tests can
  check a scorer or the alerting against what the text was written to say.  It is not a gold label.

The malformed file mixes valid lines (post ids ``valid-*``) with broken ones (bad JSON, missing text,
unknown platform, bad timestamp, ...) so a replay test can check line numbers and that the run goes on.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

SEED = 20260314
BASE_TIME = datetime(2026, 3, 14, 18, 0, 0, tzinfo=UTC)
SPAN = timedelta(hours=3)
BASELINE_POSTS_PER_TOPIC = 65
BURST_TOPIC = "skyways-airline"
BURST_START = BASE_TIME - timedelta(minutes=85)
BURST_END = BURST_START + timedelta(minutes=15)
BURST_POSTS = 70
IMAGE_SHARE = 0.30
FOREIGN_SHARE = 0.06
EMOJI_ONLY_SHARE = 0.025
MEDIA_URL = "http://{MEDIA_HOST}/img/%s.jpg"
PLATFORMS = ("twitter", "reddit", "bluesky", "mastodon")
PLATFORM_WEIGHTS = (0.40, 0.20, 0.22, 0.18)
SENTIMENTS = ("positive", "neutral", "negative")

HERE = Path(__file__).resolve().parent
SAMPLE_PATH = HERE / "sample_posts.jsonl"
MALFORMED_PATH = HERE / "malformed_posts.jsonl"


@dataclass
class Topic:
    """Everything the generator needs to write posts about one monitored topic."""

    name: str
    terms: tuple[str, ...]  # what a connector would have searched for; matched terms become keywords
    mix: tuple[float, float, float]  # positive / neutral / negative share of the baseline
    templates: dict[str, list[str]]
    reddit: dict[str, list[str]]  # "Title\n\nbody" submissions
    foreign: list[tuple[str, str, str]]  # (lang, sentiment, text)
    emoji: list[tuple[str, str]]  # (sentiment, text)
    hashtags: list[str]
    mentions: list[str]
    subreddits: list[str]
    images: list[tuple[str, str]]  # (served image name, alt text)
    slots: dict[str, list[str]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------
# Topics.  Templates are written for the project; {slot} names are filled from Topic.slots or COMMON_SLOTS.
# ---------------------------------------------------------------------------------------------------

ACME = Topic(
    name="acme-phone",
    terms=("acme x2", "acmex2", "acme phone", "@acmemobile", "acme"),
    mix=(0.45, 0.30, 0.25),
    templates={
        "positive": [
            "the {feature} on the Acme X2 is actually insane 🔥",
            "Upgraded from a {rival} to the Acme X2 and I'm not going back. {feature} alone is worth it",
            "ok @AcmeMobile you cooked with this one. {feature} 10/10",
            "day 2 with the acme x2: battery went from 100 to {pct}% after a full day of maps + spotify. impressed",
            "Took the X2 to the park and the photos look like they came out of a real camera. Acme finally did it 📸",
            "not me defending a phone brand online but the Acme X2 {feature} is so good??",
            "The Acme X2 unboxing experience is chef's kiss. no plastic, tiny box, charger brick still included 👏",
            "fwiw the acme phone survived a drop onto concrete this morning, not a scratch. that frame is no joke",
            "Switched to the Acme X2 last night. Setup took {mins} mins and moved everything from my {rival}. smooth af",
            "acme x2 night mode >>> everything else I've tried tbh",
            "just saying, {price} for what the Acme X2 does is a fair deal. the {feature} is flagship tier",
            "lowkey the best part of the acme x2 is how light it is. my wrist thanks u @AcmeMobile",
        ],
        "neutral": [
            "Acme X2 launch event starts at {clock} ET, livestream link in bio",
            "Anyone know if the Acme X2 supports {question_feature}?",
            "Pre-orders for the Acme X2 open {weekday}. {price} for the base model, 256GB",
            "Picked up the Acme X2 in {color}. Will report back after a week of use.",
            "Acme X2 vs {rival}: spec sheet comparison thread 🧵 {link}",
            "Acme X2 comes in {color}, {color2} and black. Which one are you getting?",
            "Reminder: Acme X2 trade-in credit ends {weekday}. Details at {link}",
            "is the acme x2 case from the launch the same size as the X1's or do I need a new one",
            "So the Acme X2 has {feature_spec}. Curious how that holds up in real use",
            "Line outside {store} for the acme phone is about {n} people right now",
            "@AcmeMobile when does the X2 ship to Canada?",
        ],
        "negative": [
            "{price} for THIS? the {feature} is worse than my 3 year old {rival} lmao",
            "Acme X2 overheating just from charging. returning it tomorrow 😤",
            "Waited {hours} hours in line at {store} for them to say they're sold out. great launch @AcmeMobile 👏",
            "the X2 screen has a green tint on mine, anyone else?? #AcmeX2",
            "acme x2 battery drained {pct}% overnight doing literally nothing. software update when",
            "My Acme X2 arrived with a dead pixel. Support chat put me on hold for {mins} minutes then disconnected 🙃",
            "Hot take: the Acme X2 is just last year's phone with a new color. {price} is a joke",
            "acme phone face unlock doesn't work with glasses on. how is this a {price} phone in 2026",
            "the X2 speaker crackles at 70% volume. two units, same issue. @AcmeMobile please",
            "no headphone jack, no charger in some regions, and now they want {price}? pass on the acme x2",
            "Acme X2 keeps dropping wifi every {mins} minutes. anyone found a fix??",
        ],
    },
    reddit={
        "positive": [
            "[Review] One week with the Acme X2\n\nComing from a {rival}. The {feature} is the real deal and battery gets me from 7am to midnight with {pct}% left. Haptics are great. Only nitpick: the camera bump wobbles on a table.",
            "Acme X2 camera samples from a weekend trip\n\nNo edits, straight out of the phone. Low light is miles ahead of the X1. Happy with the upgrade.",
            "Acme actually listened to feedback this time\n\nThey fixed the slow charging, the ugly notch and the bloatware. First Acme phone I'd recommend to my parents.",
        ],
        "neutral": [
            "Acme X2 launch megathread\n\nPost your questions, pre-order experiences and shipping dates here. Spec sheet: {link}",
            "Should I upgrade from the X1 to the Acme X2?\n\nI mostly use it for photos and messaging. Is the {feature} difference noticeable day to day?",
            "Acme X2 vs {rival} for a student budget?\n\nBoth are around {price} with the student discount. Don't care about gaming.",
        ],
        "negative": [
            "PSA: Acme X2 units from the first batch have a display tint issue\n\nThree people in my office got green-tinted screens. Acme support says it is 'within spec'. It is not.",
            "Returned my Acme X2 after 3 days\n\nOverheating while charging, random reboots, and the {feature} is nowhere near the marketing shots. Back to my {rival}.",
            "The Acme X2 launch was a mess\n\nPre-order page crashed, my order got cancelled twice, and now the ship date is {weekday} next month.",
        ],
    },
    foreign=[
        ("es", "positive", "El Acme X2 tiene una cámara increíble, las fotos de noche son otro nivel 😍"),
        ("de", "negative", "Acme X2 nach zwei Tagen zurückgeschickt. Akku hält keinen Tag, viel zu teuer für das Gebotene."),
        ("pt", "neutral", "Alguém sabe quando o Acme X2 chega no Brasil?"),
        ("fr", "positive", "Franchement le Acme X2 est super fluide, je ne regrette pas du tout 👌"),
        ("ja", "negative", "Acme X2、充電中にめっちゃ熱くなる…返品しようかな"),
    ],
    emoji=[("positive", "📱🔥🔥🔥"), ("negative", "📱😡💸"), ("positive", "😍📸✨")],
    hashtags=["#AcmeX2", "#Acme", "#AcmeLaunch", "#smartphone", "#tech"],
    mentions=["@AcmeMobile", "@AcmeSupport"],
    subreddits=["Android", "gadgets", "AcmePhones"],
    images=[("camera", "photo taken with the new phone"), ("coffee", "phone next to a cup of coffee"),
            ("astronaut", "new lock screen wallpaper"), ("rocket", "launch day meme"), ("brick", "")],
    slots={
        "feature": ["camera", "battery life", "screen", "120Hz display", "face unlock", "charging speed",
                    "titanium frame", "night mode", "zoom lens", "haptic engine"],
        "question_feature": ["eSIM", "wireless charging", "USB-C video out", "dual SIM", "Wi-Fi 7"],
        "feature_spec": ["a 5,200 mAh battery", "a 6.4 inch 120Hz screen", "a periscope zoom", "65W charging"],
        "rival": ["Pixel", "iPhone", "Galaxy", "OnePlus", "X1"],
        "price": ["$999", "$1,099", "$899", "$1,199"],
        "store": ["the Acme store on 5th", "Best Buy", "the mall", "the downtown Acme store"],
        "color": ["sage green", "midnight blue", "sand", "coral"],
        "color2": ["silver", "graphite", "lilac"],
    },
)

SKYWAYS = Topic(
    name="skyways-airline",
    terms=("skyways", "@skywaysair", "skyways airline", "#skywaysdown"),
    mix=(0.25, 0.35, 0.40),
    templates={
        "positive": [
            "Shoutout to the SkyWays crew on {flight}, they upgraded me for my birthday 🥹",
            "legroom on skyways' new A321s is actually decent. didn't expect that",
            "SkyWays landed us {mins} minutes early and the bags were out before I reached the belt. rare W",
            "the skyways app rebooked me automatically when my connection got cancelled. took 2 taps. love that",
            "Flight attendant on SkyWays {flight} calmed down a crying toddler AND a nervous flyer (me). heroes",
            "SkyWays lounge at {airport} has real food now, not just sad crackers ✈️",
            "Booked {city} for the summer with SkyWays points. {n}k points round trip, not bad at all",
            "smoothest boarding I've ever had, skyways doing zones properly at {airport}",
        ],
        "neutral": [
            "SkyWays adding nonstop {city} to {city2} from {month}",
            "Does SkyWays let you bring a carry-on AND a personal item on basic economy?",
            "On a SkyWays flight to {city}, anyone know if the wifi works over the Atlantic?",
            "SkyWays {flight} boarding at gate {gate}, {airport}",
            "SkyWays changed their baggage fees again: {link}",
            "How early should I get to {airport} for a SkyWays domestic flight on a {weekday}?",
            "@SkyWaysAir is seat selection free for status members now?",
            "skyways or northjet for {city}? prices are about the same",
        ],
        "negative": [
            "lost my bag on SkyWays. again. 3rd time this year @SkyWaysAir",
            "SkyWays {flight} delayed {hours} hours with zero updates at the gate. cool cool cool",
            "$85 to pick a seat on skyways?? for a {hours} hour flight? no thanks",
            "skyways customer service hold time: {mins} minutes and counting 📞",
            "SkyWays cancelled my flight to {city} the night before and offered a voucher. I need to be at a wedding",
            "Seat wouldn't recline, screen broken, no water service. SkyWays is not serious",
            "the skyways app logged me out mid check-in and now my seat is gone 🙃",
        ],
    },
    reddit={
        "positive": [
            "Credit where it's due: SkyWays handled my misconnect well\n\nMissed my connection at {airport}, the gate agent had me on the next flight plus a meal voucher before I even asked.",
        ],
        "neutral": [
            "SkyWays basic economy vs main cabin, worth the upgrade?\n\nFlying {city} to {city2} in {month}, about {hours} hours. Difference is $60 each way.",
            "SkyWays status match — anyone done it recently?\n\nI have mid-tier status with another airline and saw they're matching until {month}.",
        ],
        "negative": [
            "SkyWays lost my checked bag and support is useless\n\nFiled a claim {n} days ago. Every call gets a different answer. Anyone escalate successfully?",
            "Avoid SkyWays connections through {airport}\n\nMissed two connections in a month because the first leg was late both times. No compensation.",
        ],
    },
    foreign=[
        ("es", "negative", "SkyWays me canceló el vuelo y nadie en el mostrador sabe nada. Qué desastre."),
        ("fr", "positive", "Vol SkyWays impeccable, équipage adorable et arrivée en avance ✈️"),
        ("de", "neutral", "Weiß jemand, ob SkyWays ab {month} wieder nach {city} fliegt?"),
        ("pt", "negative", "Três horas na fila da SkyWays em {airport}. Nunca mais."),
    ],
    emoji=[("negative", "✈️😡"), ("positive", "✈️🥰"), ("negative", "🧳❓😭")],
    hashtags=["#SkyWays", "#travel", "#avgeek", "#flying"],
    mentions=["@SkyWaysAir", "@SkyWaysHelp"],
    subreddits=["travel", "flying", "awardtravel"],
    images=[("rocket", "takeoff through the window (not really)"), ("hubble", "night sky from seat 31A"),
            ("gravel", "the view from the delayed plane"), ("coffee", "airport coffee at 6am"),
            ("brick", "terminal wall, nothing else to look at")],
    slots={
        "flight": ["SW214", "SW1187", "SW88", "SW902", "SW1430", "SW577"],
        "airport": ["JFK", "ORD", "DEN", "ATL", "SFO", "BOS", "the airport"],
        "city": ["Lisbon", "Denver", "Austin", "Reykjavik", "Tokyo", "Mexico City", "Miami"],
        "city2": ["Boston", "Seattle", "Chicago", "Toronto"],
        "gate": ["B12", "C7", "A31", "D4", "E22"],
        "month": ["May", "June", "September"],
    },
)

# Posts written for the outage burst only (topic SKYWAYS, between BURST_START and BURST_END).
SKYWAYS_OUTAGE: dict[str, list[str]] = {
    "negative": [
        "@SkyWaysAir your app has been down for {mins} minutes and the check-in kiosks at {airport} are dead too. what is going on",
        "Stuck at {airport} gate {gate}, SkyWays says 'system outage', no ETA. #SkyWaysDown",
        "SkyWays website throws a 500 error on every page. can't rebook, can't check in, can't do anything",
        "is skyways down for everyone or just me? app just spins",
        "SKYWAYS IS DOWN. the whole check-in system. line at {airport} is out the door 😤",
        "Flight {flight} 'delayed due to an IT issue'. the line at customer service wraps around the terminal",
        "three hundred people at the SkyWays counter at {airport} and two agents writing boarding passes BY HAND",
        "skyways app: 'something went wrong'. yeah no kidding. #SkyWaysDown",
        "Missed my connection because SkyWays can't print boarding passes. Nobody knows anything. Horrible.",
        "@SkyWaysHelp been on hold {mins} min, the hold music stopped, the app is down, the kiosks are down. fun",
        "SkyWays outage is a complete meltdown at {airport}. kids crying, people yelling, zero info",
        "can't even get a refund request in because the skyways site is dead. this is a joke",
        "Day ruined. SkyWays systems down, {flight} grounded, next available is tomorrow. Unacceptable.",
        "anyone else on {flight}? they just said the whole skyways network is down and they can't dispatch",
        "the skyways outage means my bag is 'in the system' which is down, so nobody knows where my bag is 💀",
        "Imagine running an airline in 2026 with no backup for check-in. @SkyWaysAir",
        "sitting on the tarmac at {airport} for {mins} minutes because skyways can't file the weight & balance. great",
        "skyways: 'we value your time'. also skyways: {hours} hour delay and a broken app",
        "Never flying SkyWays again after today. No app, no kiosks, no answers. #SkyWaysDown",
        "SkyWays agents at {airport} are doing their best but the outage is brutal, people are losing it",
        "so the skyways app is down AND the phone line is down. how do I rebook?!",
        "lol my skyways boarding pass says 'ERROR' in the seat field",
        "worst travel day ever. skyways system crash, missed the wedding rehearsal 😭",
        "SkyWays outage update: still no update. {mins} minutes in. #SkyWaysDown",
    ],
    "neutral": [
        "Reports coming in that SkyWays check-in and app are down at several airports, including {airport}",
        "SkyWays outage: status page says 'investigating'. {link}",
        "Is anyone tracking how many SkyWays flights are delayed right now? {airport} board is all red",
        "FYI if you fly SkyWays today, bring a printed itinerary, the systems are down at {airport}",
    ],
    "positive": [
        "props to the SkyWays gate agent at {airport} handling this outage like a champ, handwriting passes with a smile",
    ],
}

CUP = Topic(
    name="cup-final",
    terms=("cup final", "#cupfinal", "rovers", "united", "northport", "eastbridge"),
    mix=(0.45, 0.25, 0.30),
    templates={
        "positive": [
            "WHAT A GOAL from {player}!!! Rovers 1-0 up in the Cup Final 🔥🔥",
            "Northport Rovers you beauties, what a performance in the cup final ⚽️💙",
            "{player} has been unreal tonight. man of the match no question #CupFinal",
            "The atmosphere at the cup final is incredible, goosebumps when the Rovers end started singing",
            "UNITED ARE BACK. {player} with the equaliser in the {minute}th minute 😭😭",
            "what a final. both teams left everything on the pitch. football is so back",
            "I've supported Eastbridge United for 30 years and this is the best night of my life",
            "the save from {keeper} in the {minute}th min... world class. #CupFinal",
            "CHAMPIONS!!! Rovers win the cup final!!! can't stop crying",
        ],
        "neutral": [
            "Cup Final lineups are out. {player} starts, {player2} on the bench",
            "Kickoff in {mins} mins. Northport Rovers vs Eastbridge United, {stadium}",
            "Half time in the Cup Final: Rovers {score} United",
            "Where's everyone watching the cup final tonight? pub or home?",
            "Possession so far in the cup final: Rovers 54%, United 46%",
            "{player} has played every minute of this season's cup run",
            "Ref for the cup final is {ref}. Make of that what you will",
            "Cup final going to extra time. 30 more minutes",
        ],
        "negative": [
            "that was NEVER a penalty. {ref} should not be refereeing a cup final #CupFinal",
            "United have been awful tonight. no shape, no ideas, no heart",
            "VAR took {mins} minutes to check that offside. killing the game",
            "{player} missing an open goal in a CUP FINAL. I need to lie down",
            "Paid £{ticket} for a cup final ticket and I can't see half the pitch from this seat 🙄",
            "Rovers parking the bus at 1-0 in a final is the most boring thing I've ever watched",
            "whoever scheduled the cup final kickoff at 8pm on a Sunday has never taken a train home",
            "trains from {stadium} are a disaster, stuck on the platform {mins} mins after the cup final",
            "gutted. losing a cup final on penalties is the cruellest thing in sport",
        ],
    },
    reddit={
        "positive": [
            "Post Match Thread: Northport Rovers {score} Eastbridge United [Cup Final]\n\nWhat a game. {player} is a legend. The second half was the best 45 minutes of football I've seen all season.",
        ],
        "neutral": [
            "Match Thread: Northport Rovers vs Eastbridge United | Cup Final\n\nVenue: {stadium}. Referee: {ref}. Lineups in the comments.",
            "Cup Final tactical preview\n\nRovers press high, United sit deep and counter. Midfield battle decides it. {link}",
        ],
        "negative": [
            "The officiating in the Cup Final was a disgrace\n\nTwo clear fouls missed in the build-up to the goal and a penalty given for nothing. {ref} should be stood down.",
        ],
    },
    foreign=[
        ("es", "positive", "¡GOLAZO de {player}! Qué final de copa, increíble ⚽🔥"),
        ("pt", "negative", "Que arbitragem horrível nessa final, roubaram o United"),
        ("es", "neutral", "Final de copa: Rovers contra United, empieza en {mins} minutos"),
        ("de", "positive", "Was für ein Pokalfinale! {player} einfach überragend"),
    ],
    emoji=[("positive", "⚽🏆🎉🎉"), ("negative", "😭😭😭💔"), ("positive", "💙💙💙")],
    hashtags=["#CupFinal", "#NRFC", "#EBU", "#football", "#COYR"],
    mentions=["@NorthportRovers", "@EastbridgeUtd"],
    subreddits=["soccer", "NorthportRovers", "football"],
    images=[("grass", "the pitch before kickoff"), ("coins", "coin toss"), ("gravel", "car park queue"),
            ("chelsea", "my cat watching the final with me"), ("coffee", "half-time tea")],
    slots={
        "player": ["Okafor", "Lindqvist", "Mendes", "Haddad", "O'Rourke", "Tanaka"],
        "player2": ["Brandt", "Silva", "Kowalski"],
        "keeper": ["Marsh", "Delacroix"],
        "ref": ["M. Pryce", "D. Holloway"],
        "stadium": ["Harbour Park", "the national stadium"],
        "minute": ["23", "57", "78", "89", "90+3"],
        "score": ["1-0", "1-1", "2-1", "0-0"],
        "ticket": ["120", "95", "180"],
    },
)

METRO = Topic(
    name="metro-strike",
    terms=("metro strike", "#metrostrike", "metro", "strike", "transit"),
    mix=(0.15, 0.35, 0.50),
    templates={
        "positive": [
            "Solidarity with the metro workers. Fair pay and safe staffing aren't too much to ask ✊ #MetroStrike",
            "metro strike day 2 and honestly cycling to work is kind of great?? might keep doing it",
            "Shoutout to the bus drivers doing extra runs on {line_bus} during the metro strike, absolute legends",
            "my boss said WFH for the whole metro strike. best news all week 🙌",
            "strangers sharing rides on the neighborhood chat because of the metro strike. faith in humanity restored",
            "The metro union's demands are reasonable. Pay them and let's move on. #MetroStrike",
        ],
        "neutral": [
            "Metro strike update: {line} closed all day, {line2} running every {mins} minutes",
            "Talks between the metro union and the city resume at {clock}",
            "How is everyone getting to work during the metro strike? asking for a route from {district}",
            "City says extra buses on {line_bus} while the metro strike lasts. Schedule: {link}",
            "Metro strike: day {n}. Next union statement expected tonight",
            "Are the night buses affected by the metro strike?",
            "Bike share in {district} is free during the metro strike according to the city",
        ],
        "negative": [
            "{hours} hours to get home because of the metro strike. I'm done 😩",
            "metro strike again?? third time this year. some of us have shifts to get to",
            "packed like sardines on the {line_bus} bus because the metro is on strike. this is unbearable",
            "Lost a day's pay because of the metro strike. Who compensates us? #MetroStrike",
            "uber from {district} quoted me $64 because of the metro strike. sixty four dollars",
            "the city and the union both need to grow up. the metro strike is hurting the people with the least options",
            "walked {n} km today because of the metro strike. my feet are destroyed",
            "Missed a hospital appointment because of the metro strike and nobody cares",
            "traffic in {district} is gridlocked, metro strike has turned the city into a parking lot",
        ],
    },
    reddit={
        "positive": [
            "Metro strike tip: the river ferry is empty and gorgeous\n\nTook it from {district} this morning, 20 minutes, no crowds. Highly recommend while the strike lasts.",
        ],
        "neutral": [
            "Metro strike megathread — routes, carpools and updates\n\nPlease keep alternatives and rideshare offers here. Official updates: {link}",
            "Which bus lines are running during the metro strike?\n\nNeed to get from {district} to downtown by 8.",
        ],
        "negative": [
            "This metro strike is ruining my job\n\nI work early shifts, there are no buses at 5am from {district} and my manager says no excuses. I've been late three days running.",
            "Rent is this high and we can't even get a working metro\n\nThis is the fourth strike this year. Both sides should be embarrassed.",
        ],
    },
    foreign=[
        ("fr", "negative", "Encore une grève du métro… deux heures pour rentrer, j'en peux plus"),
        ("de", "neutral", "Metro-Streik: Linie {line} fährt heute gar nicht, Busse alle {mins} Minuten"),
        ("es", "positive", "Todo mi apoyo a los trabajadores del metro en huelga ✊"),
        ("fr", "neutral", "Quelqu'un sait si les bus de nuit circulent pendant la grève du métro ?"),
    ],
    emoji=[("negative", "🚇❌😩"), ("negative", "🚶‍♀️🚶‍♀️🚶‍♀️😮‍💨"), ("positive", "✊✊")],
    hashtags=["#MetroStrike", "#commute", "#transit", "#RivertonMetro"],
    mentions=["@RivertonMetro", "@CityOfRiverton", "@MetroWorkersUnion"],
    subreddits=["Riverton", "transit", "RivertonCommuters"],
    images=[("brick", "closed station entrance"), ("gravel", "the walk to work"),
            ("chelsea", "my WFH coworker"), ("coffee", "third coffee of the commute"), ("camera", "")],
    slots={
        "line": ["Line 1", "Line 2", "the Red Line", "the Green Line"],
        "line2": ["Line 4", "the Blue Line"],
        "line_bus": ["the 12", "the 40", "route 7", "the express"],
        "district": ["Eastside", "Old Town", "Harbor", "Millbrook", "the north end"],
    },
)

STARFALL = Topic(
    name="starfall-series",
    terms=("starfall", "#starfall", "starfall finale", "streamflix"),
    mix=(0.50, 0.20, 0.30),
    templates={
        "positive": [
            "the Starfall finale destroyed me. {character} deserved better but what an ending 😭",
            "Starfall season 2 is the best thing on TV right now and I will not be taking questions",
            "that one-take battle scene in episode {ep} of Starfall??? the budget went somewhere GOOD",
            "{character} in the Starfall finale… an absolute masterclass in acting",
            "finished Starfall in one weekend, no regrets. the soundtrack alone 🎧✨",
            "Starfall said 'let's make a show about grief in space' and then actually did it well",
            "the way Starfall paid off that episode 1 detail in the finale. writers are geniuses",
            "rewatching the Starfall finale for the third time. still crying at the same scene",
        ],
        "neutral": [
            "Starfall finale drops at {clock} tonight on Streamflix",
            "Is Starfall getting a season 3? anyone heard anything?",
            "Starfall episode {ep} runtime is {mins} minutes btw",
            "Where do I start with Starfall, season 1 or the prequel movie?",
            "Starfall cast interview about the finale: {link}",
            "the Starfall finale is trending, guess I'm watching it tonight",
        ],
        "negative": [
            "the Starfall finale was rushed and made no sense. two seasons of setup for THAT?",
            "killing off {character} like that was lazy writing. I'm done with Starfall",
            "Streamflix buffering every 2 minutes during the Starfall finale. unwatchable",
            "Starfall fell off so hard in season 2. pacing is glacial until episode {ep}",
            "why is the Starfall finale so dark I literally can't see anything on my TV",
            "{character}'s arc in Starfall got completely thrown away. so disappointing",
        ],
    },
    reddit={
        "positive": [
            "[Spoilers] Starfall S2 finale discussion — that ending!\n\nThe callback to episode {ep} gave me chills. {character} finally got the moment they deserved.",
        ],
        "neutral": [
            "Starfall S2E{ep} Episode Discussion\n\nAired on Streamflix at {clock}. Please tag spoilers for future episodes.",
            "Starfall season 3 rumours thread\n\nAnyone have a source on the renewal? Production posts on {link} are ambiguous.",
        ],
        "negative": [
            "[Spoilers] The Starfall finale undid everything season 1 built\n\n{character}'s whole arc was thrown out for a twist that contradicts episode {ep}. Really disappointed.",
        ],
    },
    foreign=[
        ("ja", "positive", "スターフォールの最終回、最高すぎて泣いた…"),
        ("es", "negative", "El final de Starfall fue un desastre, qué decepción"),
        ("pt", "positive", "Acabei Starfall agora e tô sem palavras, que final 😭"),
    ],
    emoji=[("positive", "🌠😭😭"), ("negative", "🌠👎"), ("positive", "✨🚀✨")],
    hashtags=["#Starfall", "#StarfallFinale", "#Streamflix", "#TV"],
    mentions=["@StarfallShow", "@Streamflix"],
    subreddits=["television", "StarfallTV", "scifi"],
    images=[("hubble", "screenshot of the opening shot"), ("astronaut", "my favourite character's poster"),
            ("rocket", "the launch scene"), ("chelsea", "cat refusing to let me watch the finale")],
    slots={
        "character": ["Captain Vey", "Ilsa", "the Navigator", "Doctor Oren", "Kit"],
        "ep": ["3", "5", "7", "8"],
    },
)

TOPICS = (ACME, SKYWAYS, CUP, METRO, STARFALL)

COMMON_SLOTS: dict[str, Callable[[random.Random], str]] = {
    "mins": lambda r: str(r.choice([5, 10, 15, 20, 25, 40, 45, 50, 90])),
    "hours": lambda r: str(r.choice([2, 3, 4, 5])),
    "pct": lambda r: str(r.choice([12, 18, 23, 31, 38, 42])),
    "n": lambda r: str(r.randint(3, 40)),
    "clock": lambda r: r.choice(["6pm", "7:30pm", "8pm", "9pm", "noon", "10am"]),
    "weekday": lambda r: r.choice(["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]),
    "link": lambda r: "https://" + r.choice(["bit.ly/", "example.com/", "t.co/"]) + _token(r, 7),
}

# ---------------------------------------------------------------------------------------------------
# Authors, ids and urls per platform.
# ---------------------------------------------------------------------------------------------------

FIRST = ["jess", "mike", "dani", "sam", "alex", "priya", "tomas", "lena", "kofi", "yuki", "marco", "aisha",
         "ben", "chloe", "dev", "emma", "felix", "gabe", "hana", "ivan", "jo", "kat", "leo", "maya", "nico",
         "omar", "pete", "quinn", "rosa", "sol", "tara", "uma", "vik", "wes", "yara", "zoe", "ravi", "ines"]
LAST = ["k", "m", "r", "b", "t", "v", "ortiz", "nguyen", "obi", "lee", "shaw", "moreau", "silva", "park"]
MASTODON_INSTANCES = ["mastodon.social", "hachyderm.io", "mas.to", "fosstodon.org", "mstdn.social"]
BSKY_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
TWITTER_EPOCH_MS = 1288834974657


def _token(rng: random.Random, length: int, alphabet: str = "abcdefghijklmnopqrstuvwxyz0123456789") -> str:
    return "".join(rng.choice(alphabet) for _ in range(length))


def _author_pool(rng: random.Random, platform: str, size: int) -> list[str]:
    pool: list[str] = []
    while len(pool) < size:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        style = rng.random()
        if platform == "twitter":
            name = rng.choice([f"{first}_{last}", f"{first}{last}{rng.randint(1, 99)}", f"{first}{rng.randint(80, 2005)}",
                               f"its{first}", f"{first}_{last}_"])
        elif platform == "reddit":
            name = rng.choice([f"{first.title()}_{last.title()}", f"throwaway_{rng.randint(1000, 9999)}",
                               f"{first}{last}{rng.randint(1, 999)}", f"Not_A_{first.title()}"])
        elif platform == "bluesky":
            name = f"{first}{last}.bsky.social" if style < 0.8 else f"{first}.{last}.dev"
        else:
            name = f"{first}{'_' + last if style < 0.5 else ''}@{rng.choice(MASTODON_INSTANCES)}"
        if name not in pool:
            pool.append(name)
    return pool


def _bluesky_tid(ts: datetime, rng: random.Random) -> str:
    """A record key shaped like a Bluesky TID: microseconds since epoch << 10 | clock id, base32-sortable."""
    value = (int(ts.timestamp() * 1_000_000) << 10) | rng.randrange(1024)
    chars = []
    for _ in range(13):
        chars.append(BSKY_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def _base36(value: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while value:
        value, rem = divmod(value, 36)
        out = digits[rem] + out
    return out or "0"


@dataclass
class IdMaker:
    """Platform-shaped post ids and permalinks (never real ones)."""

    rng: random.Random
    reddit_next: int = 0x1B7E0000
    dids: dict[str, str] = field(default_factory=dict)

    def make(self, platform: str, author: str, ts: datetime, subreddit: str, slug: str,
             submission: bool) -> tuple[str, str]:
        ms = int(ts.timestamp() * 1000)
        if platform == "twitter":
            post_id = str(((ms - TWITTER_EPOCH_MS) << 22) | self.rng.randrange(1 << 22))
            return post_id, f"https://x.com/{author}/status/{post_id}"
        if platform == "mastodon":
            post_id = str((ms << 16) | self.rng.randrange(1 << 16))
            user, instance = author.split("@")
            return post_id, f"https://{instance}/@{user}/{post_id}"
        if platform == "bluesky":
            did = self.dids.setdefault(author, "did:plc:" + _token(self.rng, 24, BSKY_ALPHABET))
            rkey = _bluesky_tid(ts, self.rng)
            return f"at://{did}/app.bsky.feed.post/{rkey}", f"https://bsky.app/profile/{author}/post/{rkey}"
        self.reddit_next += self.rng.randint(5, 400)
        base = _base36(self.reddit_next)
        if submission:
            return f"t3_{base}", f"https://www.reddit.com/r/{subreddit}/comments/{base}/{slug}/"
        parent = _base36(self.reddit_next - self.rng.randint(50, 5000))
        return f"t1_{base}", f"https://www.reddit.com/r/{subreddit}/comments/{parent}/comment/{base}/"


# ---------------------------------------------------------------------------------------------------
# Text: slot filling and noise.
# ---------------------------------------------------------------------------------------------------

SLOT = re.compile(r"\{(\w+)\}")


def fill(template: str, topic: Topic, rng: random.Random) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in topic.slots:
            return rng.choice(topic.slots[name])
        if name in COMMON_SLOTS:
            return COMMON_SLOTS[name](rng)
        raise KeyError(f"template slot {{{name}}} has no values (topic {topic.name})")

    return SLOT.sub(one, template)


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 2)
    kind = rng.random()
    if kind < 0.4:  # swapped letters
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind < 0.75:  # dropped letter
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]  # doubled letter


def add_typos(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if w.isalpha() and len(w) >= 5]
    for i in rng.sample(candidates, k=min(len(candidates), rng.choice([1, 1, 2]))):
        words[i] = _typo(words[i], rng)
    return " ".join(words)


def elongate(text: str, rng: random.Random) -> str:
    for word, long in (("so ", "soooo "), ("no ", "noooo "), ("what ", "whaaat "), ("love", "loveeee")):
        if word in text and rng.random() < 0.7:
            return text.replace(word, long, 1)
    return text


def decorate(text: str, platform: str, topic: Topic, rng: random.Random) -> str:
    """Platform habits: hashtags and links on twitter, CamelCase tag lines on mastodon, plain bluesky."""
    if platform == "twitter":
        if "@" not in text and rng.random() < 0.15:
            text = f"{rng.choice(topic.mentions)} {text}"
        if rng.random() < 0.35:
            tags = rng.sample(topic.hashtags, k=rng.choice([1, 1, 2]))
            text = f"{text} {' '.join(t for t in tags if t.lower() not in text.lower())}".rstrip()
        if rng.random() < 0.1:
            text = f"{text} https://t.co/{_token(rng, 10, 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789')}"
    elif platform == "mastodon":
        if rng.random() < 0.6:
            tags = [t for t in rng.sample(topic.hashtags, k=rng.choice([1, 2, 3])) if t.lower() not in text.lower()]
            if tags:
                text = f"{text}\n\n{' '.join(tags)}"
    elif platform == "bluesky" and rng.random() < 0.12:
        text = f"{text} {rng.choice(topic.hashtags)}"
    return text


OPENERS = {
    "positive": ["ngl ", "honestly ", "ok but ", "not gonna lie, ", "wow. ", "update: "],
    "neutral": ["quick q: ", "fyi ", "psa: ", "update: ", "hmm. "],
    "negative": ["ugh. ", "smh ", "honestly ", "unreal. ", "so yeah, ", "lmao "],
}
CLOSERS = {
    "positive": [" 🙌", " ❤️", " 😍", " fr", "!!", " 10/10", " 💯"],
    "neutral": [" 🤔", " (thread)", " anyone?", " 👀"],
    "negative": [" smh", " 🙄", " 😤", " 🤬", " 👎", "...", " never again"],
}


def add_noise(text: str, sentiment: str, rng: random.Random) -> str:
    if "\n" not in text:  # a reddit title keeps its shape
        if rng.random() < 0.18:
            opener = rng.choice(OPENERS[sentiment])
            text = opener + (text[0].lower() + text[1:] if text[:2] != text[:2].upper() else text)
        if rng.random() < 0.22:
            text = text.rstrip(".") + rng.choice(CLOSERS[sentiment])
    if rng.random() < 0.10:
        text = add_typos(text, rng)
    if rng.random() < 0.08:
        text = elongate(text, rng)
    roll = rng.random()
    if roll < 0.20:
        text = text.lower()
    elif roll < 0.24 and sentiment == "negative" and len(text) < 90:
        text = text.upper()
    return text


def keywords_for(text: str, topic: Topic) -> list[str]:
    """The topic's query terms found in the text; a connector matched on at least one of them."""
    lowered = text.lower()
    found = [t for t in topic.terms if t in lowered]
    return found or [topic.terms[0]]


def _slug(text: str) -> str:
    words = re.findall(r"[a-z0-9]+", text.split("\n", 1)[0].lower())
    return "_".join(words[:8]) or "post"


# ---------------------------------------------------------------------------------------------------
# The feed.
# ---------------------------------------------------------------------------------------------------


def _pick_sentiment(mix: Sequence[float], rng: random.Random) -> str:
    return rng.choices(SENTIMENTS, weights=mix)[0]


def _make_post(topic: Topic, sentiment: str, ts: datetime, rng: random.Random, ids: IdMaker,
               authors: dict[str, list[str]], *, in_burst: bool = False,
               burst_templates: dict[str, list[str]] | None = None) -> dict[str, Any]:
    platform = rng.choices(PLATFORMS, weights=PLATFORM_WEIGHTS)[0]
    lang: str | None = "en"
    submission = False
    roll = rng.random()
    if roll < EMOJI_ONLY_SHARE:
        choices = [e for e in topic.emoji if e[0] == sentiment] or topic.emoji
        sentiment, text = rng.choice(choices)
        lang = None
    elif roll < EMOJI_ONLY_SHARE + FOREIGN_SHARE and not in_burst:
        choices = [f for f in topic.foreign if f[1] == sentiment] or topic.foreign
        lang, sentiment, template = rng.choice(choices)
        text = fill(template, topic, rng)
    else:
        if burst_templates is not None:
            pool = burst_templates[sentiment]
        elif platform == "reddit" and rng.random() < 0.55:
            pool = topic.reddit[sentiment]
            submission = True
        else:
            pool = topic.templates[sentiment]
        text = add_noise(fill(rng.choice(pool), topic, rng), sentiment, rng)
        text = decorate(text, platform, topic, rng)
    if platform == "reddit":
        lang = None  # Reddit's API reports no language
    author = rng.choice(authors[platform])
    subreddit = rng.choice(topic.subreddits)
    post_id, url = ids.make(platform, author, ts, subreddit, _slug(text), submission)
    media = []
    if rng.random() < IMAGE_SHARE:
        count = 2 if rng.random() < 0.12 else 1
        for name, alt in rng.sample(topic.images, k=count):
            media.append({"url": MEDIA_URL % name, "kind": "image", "alt": alt or None})
    return {
        "schema_version": 1,
        "platform": platform,
        "post_id": post_id,
        "text": text,
        "created_at": ts.isoformat(),
        "author": author,
        "lang": lang,
        "url": url,
        "topic": topic.name,
        "keywords": keywords_for(text, topic),
        "media": media,
        "raw": {"source": "sentistream-sample", "intended_sentiment": sentiment, "in_burst": in_burst},
    }


def _official(topic: Topic, author: str, text: str, ts: datetime, ids: IdMaker) -> dict[str, Any]:
    post_id, url = ids.make("twitter", author, ts, "", "", False)
    return {
        "schema_version": 1, "platform": "twitter", "post_id": post_id, "text": text,
        "created_at": ts.isoformat(), "author": author, "lang": "en", "url": url, "topic": topic.name,
        "keywords": keywords_for(text, topic), "media": [],
        "raw": {"source": "sentistream-sample", "intended_sentiment": "neutral", "in_burst": True},
    }


def generate_posts(seed: int = SEED, base_time: datetime = BASE_TIME) -> list[dict[str, Any]]:
    """The whole sample feed, sorted by ``created_at``; same seed and base time, same posts."""
    rng = random.Random(seed)
    ids = IdMaker(rng)
    authors = {p: _author_pool(rng, p, 90) for p in PLATFORMS}
    start = base_time - SPAN
    burst_start = base_time - (BASE_TIME - BURST_START)
    posts: list[dict[str, Any]] = []
    for topic in TOPICS:
        for _ in range(BASELINE_POSTS_PER_TOPIC):
            ts = start + timedelta(seconds=rng.randrange(int(SPAN.total_seconds())))
            posts.append(_make_post(topic, _pick_sentiment(topic.mix, rng), ts, rng, ids, authors))
    burst_mix = (0.02, 0.08, 0.90)
    for _ in range(BURST_POSTS):
        # Ramp up fast, tail off: most complaints land in the first ten minutes of the outage.
        offset = min(int(rng.triangular(0, 900, 240)), 899)
        ts = burst_start + timedelta(seconds=offset)
        posts.append(_make_post(SKYWAYS, _pick_sentiment(burst_mix, rng), ts, rng, ids, authors,
                                in_burst=True, burst_templates=SKYWAYS_OUTAGE))
    posts.append(_official(SKYWAYS, "SkyWaysAir", "We're aware of a technical issue affecting check-in and the "
                           "SkyWays app. Our teams are working to restore service as quickly as possible. "
                           "We're sorry for the disruption.", burst_start + timedelta(minutes=6), ids))
    posts.append(_official(SKYWAYS, "SkyWaysAir", "Update: SkyWays check-in systems are being restored at most "
                           "airports. Please allow extra time and check your flight status before heading out.",
                           burst_start + timedelta(minutes=14, seconds=30), ids))
    posts.sort(key=lambda p: (p["created_at"], p["post_id"]))
    keys = {(p["platform"], p["post_id"]) for p in posts}
    if len(keys) != len(posts):
        raise RuntimeError("generated post ids collide; change the seed")
    return posts


def _valid_example(post_id: str, minutes_before: int) -> dict[str, Any]:
    return {"schema_version": 1, "platform": "mastodon", "post_id": post_id,
            "text": "Metro strike update: Line 2 running every 15 minutes #MetroStrike",
            "created_at": (BASE_TIME - timedelta(minutes=minutes_before)).isoformat(),
            "author": "lena_park@mas.to", "lang": "en", "url": None, "topic": "metro-strike",
            "keywords": ["metro strike"], "media": [], "raw": None}


def malformed_lines() -> list[str]:
    """Valid lines (post ids ``valid-*``) between broken ones; each broken line fails for one reason."""
    def dumps(obj: Any) -> str:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))

    missing_text = _valid_example("bad-missing-text", 9)
    del missing_text["text"]
    unknown_platform = _valid_example("bad-unknown-platform", 8) | {"platform": "myspace"}
    bad_timestamp = _valid_example("bad-timestamp", 7) | {"created_at": "yesterday at noon"}
    text_not_string = _valid_example("bad-text-type", 6) | {"text": 12345}
    media_without_url = _valid_example("bad-media", 5) | {"media": [{"kind": "image", "alt": "no url"}]}
    return [
        dumps(_valid_example("valid-1", 10)),
        '{"platform":"twitter","post_id":"bad-json","text":"unterminated string,"created_at":',
        dumps(missing_text),
        dumps(_valid_example("valid-2", 8)),
        dumps(unknown_platform),
        dumps(bad_timestamp),
        dumps(["a", "json", "array", "is", "not", "a", "post"]),
        dumps(text_not_string),
        dumps(media_without_url),
        "this line is not json at all <<<>>>",
        dumps(_valid_example("valid-3", 4)),
    ]


def render(posts: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(p, ensure_ascii=False, separators=(",", ":")) + "\n" for p in posts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed files differ")
    parser.add_argument("--out-dir", type=Path, default=HERE)
    args = parser.parse_args(argv)
    outputs = {
        args.out_dir / SAMPLE_PATH.name: render(generate_posts()),
        args.out_dir / MALFORMED_PATH.name: "".join(line + "\n" for line in malformed_lines()),
    }
    stale = []
    for path, content in outputs.items():
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != content:
                stale.append(str(path))
        else:
            path.write_text(content, encoding="utf-8")
            sys.stdout.write(f"wrote {path} ({content.count(chr(10))} lines)\n")
    if stale:
        sys.stdout.write("stale, regenerate with connectors/samples/generate_samples.py: " + ", ".join(stale) + "\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
