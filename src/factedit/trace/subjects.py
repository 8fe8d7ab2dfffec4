"""A fixed, model-independent sample of subjects for the noise level of causal tracing.

The ROME paper (Meng et al. 2022, §2.1) sets the corruption to 3 × the standard deviation of
subject embeddings measured over a sample of subjects, once per model; so does factedit, so
that a fact's trace never depends on the scale of that fact's own tokens. These names span
people, places, organisations, works and products (written for factedit, not taken from any
benchmark).
"""

from __future__ import annotations

SUBJECTS: tuple[str, ...] = (
    "Albert Einstein", "Marie Curie", "Isaac Newton", "Leonardo da Vinci", "William Shakespeare",
    "Ludwig van Beethoven", "Pablo Picasso", "Charles Darwin", "Nelson Mandela", "Mahatma Gandhi",
    "Barack Obama", "Angela Merkel", "Winston Churchill", "Napoleon Bonaparte", "Cleopatra",
    "Serena Williams", "Lionel Messi", "Michael Jordan", "Usain Bolt", "Roger Federer",
    "Taylor Swift", "Elvis Presley", "Frida Kahlo", "Jane Austen", "Leo Tolstoy",
    "Paris", "Tokyo", "Buenos Aires", "Cairo", "Sydney", "Toronto", "Mumbai", "Istanbul",
    "Berlin", "Nairobi", "Reykjavik", "Lima", "Seoul", "Vienna", "Hanoi",
    "France", "Japan", "Brazil", "Canada", "Kenya", "Norway", "Australia", "Mexico", "India",
    "Egypt", "the Eiffel Tower", "the Great Wall of China", "Mount Everest", "the Amazon River",
    "the Sahara", "the Colosseum", "the Statue of Liberty", "Lake Baikal", "the Alps",
    "the Pacific Ocean", "Google", "Toyota", "Microsoft", "Nokia", "Nestlé", "Samsung",
    "the BBC", "NASA", "the United Nations", "Harvard University", "the Red Cross", "IKEA",
    "Volkswagen", "Sony", "Apple", "the iPhone", "the PlayStation", "Windows", "the Boeing 747",
    "Coca-Cola", "Lego", "Wikipedia", "Python", "the Mona Lisa", "Hamlet", "Don Quixote",
    "The Beatles", "Star Wars", "the Olympic Games", "the Nobel Prize", "Christianity",
    "Buddhism", "the Roman Empire", "the French Revolution", "World War II", "the Renaissance",
    "photosynthesis", "penicillin", "the Internet", "jazz",
)  # fmt: skip
