"""The PMIRS paper's ten caption templates: training phrases and the benchmark's query phrases."""

PAPER_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}",
    "an image of the {}",
    "a detailed depiction of a {}",
    "a scene containing a {}",
    "a close-up view of the {}",
    "a snapshot showing a {}",
    "a typical representation of a {}",
    "a natural picture featuring a {}",
    "a visual example of a {}",
    "a realistic image that includes a {}",
)
