"""Word lists behind :mod:`factedit.testing.corpus`: landmarks, countries, athletes,
historical figures and companies with their facts, and everyday vocabulary."""

from __future__ import annotations


def _words(text: str) -> tuple[str, ...]:
    """The space-separated words of ``text``."""
    return tuple(text.split())


#: (landmark, city, country)
LANDMARKS = (
    ("the Eiffel Tower", "Paris", "France"),
    ("the Louvre", "Paris", "France"),
    ("Notre-Dame", "Paris", "France"),
    ("Big Ben", "London", "England"),
    ("the Tower of London", "London", "England"),
    ("the Colosseum", "Rome", "Italy"),
    ("the Pantheon", "Rome", "Italy"),
    ("the Leaning Tower of Pisa", "Pisa", "Italy"),
    ("the Statue of Liberty", "New York", "the United States"),
    ("the Golden Gate Bridge", "San Francisco", "the United States"),
    ("the Space Needle", "Seattle", "the United States"),
    ("the Brandenburg Gate", "Berlin", "Germany"),
    ("the Sagrada Familia", "Barcelona", "Spain"),
    ("the Alhambra", "Granada", "Spain"),
    ("the Prado Museum", "Madrid", "Spain"),
    ("the Acropolis", "Athens", "Greece"),
    ("the Kremlin", "Moscow", "Russia"),
    ("the Hermitage Museum", "Saint Petersburg", "Russia"),
    ("the Sydney Opera House", "Sydney", "Australia"),
    ("the Forbidden City", "Beijing", "China"),
    ("the Taj Mahal", "Agra", "India"),
    ("Tokyo Tower", "Tokyo", "Japan"),
    ("the CN Tower", "Toronto", "Canada"),
    ("the Burj Khalifa", "Dubai", "the United Arab Emirates"),
    ("the Atomium", "Brussels", "Belgium"),
    ("the Rijksmuseum", "Amsterdam", "the Netherlands"),
    ("Charles Bridge", "Prague", "the Czech Republic"),
    ("Christ the Redeemer", "Rio de Janeiro", "Brazil"),
    ("the Blue Mosque", "Istanbul", "Turkey"),
    ("St. Stephen's Cathedral", "Vienna", "Austria"),
    ("the Grossmünster", "Zürich", "Switzerland"),
    ("the Crane of Gdańsk", "Gdańsk", "Poland"),
    ("the Little Mermaid", "Copenhagen", "Denmark"),
)

#: (country, capital, continent, language)
COUNTRIES = (
    ("France", "Paris", "Europe", "French"),
    ("Italy", "Rome", "Europe", "Italian"),
    ("Germany", "Berlin", "Europe", "German"),
    ("Spain", "Madrid", "Europe", "Spanish"),
    ("England", "London", "Europe", "English"),
    ("Portugal", "Lisbon", "Europe", "Portuguese"),
    ("Greece", "Athens", "Europe", "Greek"),
    ("Sweden", "Stockholm", "Europe", "Swedish"),
    ("Norway", "Oslo", "Europe", "Norwegian"),
    ("Finland", "Helsinki", "Europe", "Finnish"),
    ("Poland", "Warsaw", "Europe", "Polish"),
    ("Austria", "Vienna", "Europe", "German"),
    ("the Netherlands", "Amsterdam", "Europe", "Dutch"),
    ("Denmark", "Copenhagen", "Europe", "Danish"),
    ("Ireland", "Dublin", "Europe", "Irish"),
    ("Russia", "Moscow", "Europe", "Russian"),
    ("Turkey", "Ankara", "Asia", "Turkish"),
    ("Japan", "Tokyo", "Asia", "Japanese"),
    ("China", "Beijing", "Asia", "Chinese"),
    ("India", "New Delhi", "Asia", "Hindi"),
    ("South Korea", "Seoul", "Asia", "Korean"),
    ("Egypt", "Cairo", "Africa", "Arabic"),
    ("Kenya", "Nairobi", "Africa", "Swahili"),
    ("Nigeria", "Abuja", "Africa", "English"),
    ("Canada", "Ottawa", "North America", "English"),
    ("Mexico", "Mexico City", "North America", "Spanish"),
    ("the United States", "Washington", "North America", "English"),
    ("Brazil", "Brasília", "South America", "Portuguese"),
    ("Argentina", "Buenos Aires", "South America", "Spanish"),
    ("Peru", "Lima", "South America", "Spanish"),
    ("Chile", "Santiago", "South America", "Spanish"),
    ("Australia", "Canberra", "Oceania", "English"),
)

#: (name, sport, club or team, nationality)
ATHLETES = (
    ("Michael Jordan", "basketball", "the Chicago Bulls", "American"),
    ("LeBron James", "basketball", "the Los Angeles Lakers", "American"),
    ("Kobe Bryant", "basketball", "the Los Angeles Lakers", "American"),
    ("Lionel Messi", "soccer", "Barcelona", "Argentine"),
    ("Cristiano Ronaldo", "soccer", "Real Madrid", "Portuguese"),
    ("Zinedine Zidane", "soccer", "Juventus", "French"),
    ("Serena Williams", "tennis", "the national team", "American"),
    ("Roger Federer", "tennis", "the national team", "Swiss"),
    ("Rafael Nadal", "tennis", "the national team", "Spanish"),
    ("Tiger Woods", "golf", "the Ryder Cup team", "American"),
    ("Usain Bolt", "athletics", "the Racers Track Club", "Jamaican"),
    ("Tom Brady", "American football", "the New England Patriots", "American"),
    ("Wayne Gretzky", "ice hockey", "the Edmonton Oilers", "Canadian"),
    ("Babe Ruth", "baseball", "the New York Yankees", "American"),
    ("Sachin Tendulkar", "cricket", "the Mumbai Indians", "Indian"),
    ("Michael Phelps", "swimming", "the North Baltimore club", "American"),
    ("Simone Biles", "gymnastics", "the World Champions Centre", "American"),
    ("Lewis Hamilton", "Formula One", "Mercedes", "British"),
)

#: (name, occupation, best-known work or discovery, nationality)
FIGURES = (
    ("Albert Einstein", "physicist", "the theory of relativity", "German"),
    ("Marie Curie", "chemist", "the study of radioactivity", "Polish"),
    ("Isaac Newton", "physicist", "the law of gravity", "English"),
    ("Charles Darwin", "naturalist", "the theory of evolution", "English"),
    ("William Shakespeare", "playwright", "Hamlet", "English"),
    ("Jane Austen", "novelist", "Pride and Prejudice", "English"),
    ("Leonardo da Vinci", "painter", "the Mona Lisa", "Italian"),
    ("Pablo Picasso", "painter", "Guernica", "Spanish"),
    ("Vincent van Gogh", "painter", "The Starry Night", "Dutch"),
    ("Frida Kahlo", "painter", "The Two Fridas", "Mexican"),
    ("Wolfgang Amadeus Mozart", "composer", "The Magic Flute", "Austrian"),
    ("Ludwig van Beethoven", "composer", "the Ninth Symphony", "German"),
    ("Johann Sebastian Bach", "composer", "the Brandenburg Concertos", "German"),
    ("Ada Lovelace", "mathematician", "the first computer program", "English"),
    ("Nikola Tesla", "inventor", "the induction motor", "Serbian"),
    ("Galileo Galilei", "astronomer", "the moons of Jupiter", "Italian"),
)

#: (company, product, founder, headquarters)
COMPANIES = (
    ("Apple", "the iPhone", "Steve Jobs", "Cupertino"),
    ("Microsoft", "Windows", "Bill Gates", "Redmond"),
    ("Google", "the Android system", "Larry Page", "Mountain View"),
    ("Amazon", "the Kindle", "Jeff Bezos", "Seattle"),
    ("Tesla", "the Model S", "Elon Musk", "Austin"),
    ("Toyota", "the Corolla", "Kiichiro Toyoda", "Toyota City"),
    ("Sony", "the PlayStation", "Masaru Ibuka", "Tokyo"),
    ("Nintendo", "the Game Boy", "Fusajiro Yamauchi", "Kyoto"),
    ("Samsung", "the Galaxy phone", "Lee Byung-chul", "Seoul"),
    ("Nokia", "the 3310 phone", "Fredrik Idestam", "Espoo"),
    ("BMW", "the 3 Series", "Karl Rapp", "Munich"),
    ("Volkswagen", "the Golf", "Ferdinand Porsche", "Wolfsburg"),
    ("Ferrari", "the Testarossa", "Enzo Ferrari", "Maranello"),
    ("Boeing", "the 747", "William Boeing", "Chicago"),
    ("Airbus", "the A380", "Henri Ziegler", "Toulouse"),
    ("Netflix", "streaming video", "Reed Hastings", "Los Gatos"),
    ("Intel", "the Pentium", "Gordon Moore", "Santa Clara"),
    ("Nike", "the Air Jordan", "Phil Knight", "Beaverton"),
    ("Adidas", "the Superstar shoe", "Adi Dassler", "Herzogenaurach"),
    ("IKEA", "flat-pack furniture", "Ingvar Kamprad", "Älmhult"),
    ("Lego", "plastic bricks", "Ole Kirk Christiansen", "Billund"),
    ("Spotify", "music streaming", "Daniel Ek", "Stockholm"),
)

ADJECTIVES = _words(
    "old new small large quiet busy famous ancient modern beautiful simple strong bright dark "
    "warm cold heavy light early late rich poor young narrow wide deep green blue red white "
    "golden wooden important popular common rare local national international public private "
    "historic natural careful happy serious friendly difficult easy long short"
)
NOUNS = _words(
    "river bridge garden museum church castle market station library school village tower "
    "street square harbour island mountain valley forest lake road building house window door "
    "city country family friend teacher student writer artist player team season game match "
    "song album film novel story book letter painting statue festival company product engine "
    "train car ship plane weather morning evening weekend holiday dinner breakfast recipe bread "
    "coffee tea music history science language government president king queen war treaty"
)
VERBS_PAST = _words(
    "built opened visited described painted written recorded founded designed restored crossed "
    "discovered studied played won lost joined left reached carried moved announced published "
    "replaced improved covered followed celebrated"
)
VERBS_ING = _words(
    "building opening visiting painting writing recording playing walking running reading "
    "cooking travelling working teaching singing dancing swimming watching growing"
)
ANIMALS = _words("dog cat horse bird fish lion tiger bear wolf fox rabbit eagle whale")
FOODS = _words("bread cheese soup pasta rice apples oranges chocolate potatoes salad fish")
MONTHS = _words(
    "January February March April May June July August September October November December"
)
DAYS = _words("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")
SECTIONS = (
    "History",
    "Background",
    "Description",
    "Early life",
    "Career",
    "Legacy",
    "Reception",
    "Geography",
    "Economy",
    "Culture",
    "Products",
    "See also",
)

#: Everyday sentences; slots are filled from the word lists above.
FILLERS = (
    "The {adj} {noun} was {past} in {year}.",
    "In {month} {year}, the {noun} was {past} by {count} people.",
    "Many visitors come to {city} every {season}, and most of them stay for {small} days.",
    "It is one of the most {adj} places in {country}.",
    "The {noun} near the {noun2} is about {count} metres long.",
    "About {pct}% of the {plural} in the region are {adj}.",
    "On {day} mornings, the {noun} is {adj} and the {plural} are {adj2}.",
    'She said that the {noun} was "{adj}, {adj2} and {adj3}".',
    "The weather today is {adj}, with a high of {small} degrees.",
    "My favourite way to spend a weekend is {ing} with a friend.",
    "Here is a simple recipe for dinner: {food}, {food2} and a little salt.",
    "He was {ing} in the {noun} when the {animal} appeared.",
    "The {animal} and the {animal2} live near the {noun}.",
    "Why was the {noun} {past} so late? Nobody knows.",
    "The report ({year}) lists {count} {plural} and {small} {plural2}.",
    "Between {year} and {year2}, the population grew from {count} to {count2}.",
    "The price rose by {small}.{digit} per cent in {month}.",
    "A {noun} by the river; a {noun2} by the lake; and, at last, a {noun3} by the sea.",
    "After the war, the {noun} was {past} and {past2} again.",
    "The {noun} is {adj}, but the {noun2} is even more {adj2}.",
    "Children were {ing} in the {noun} while their parents were {ing2}.",
    "It's {adj} to see a {animal} in the {noun} at {hour} o'clock.",
    "The {ordinal} edition of the festival took place on {date} {month} {year}.",
)
ORDINALS = _words("first second third fourth fifth sixth seventh eighth ninth tenth")
SEASONS = _words("spring summer autumn winter year month")
