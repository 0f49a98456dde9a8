"""The five presets the page offered before presets were data."""

from django.db import migrations

PRESETS = [
    ("caption", "Short caption", "Write one short sentence that captions this image.", "caption", ""),
    (
        "detailed",
        "Detailed description",
        "Describe this image in detail: the subject, the setting, colours, and any text you can read.",
        "more_detailed_caption",
        "",
    ),
    (
        "text",
        "Extract text",
        "Extract all text visible in this image, keeping its line breaks. Reply with the text only.",
        "ocr",
        "Reads the text in the image; OCR keeps more detail (a longer side of 2048).",
    ),
    (
        "tags",
        "Tags / keywords",
        "List 10 to 15 comma-separated keywords for this image, most relevant first. Reply with the list only.",
        "caption",
        "Florence-2 models with a tagging task (prompt_gen_tags) use it instead.",
    ),
    (
        "alt",
        "Alt text for accessibility",
        "Write alt text for this image for someone using a screen reader: one or two concise sentences, "
        "without starting with 'image of'.",
        "detailed_caption",
        "",
    ),
]


def add_presets(apps, schema_editor):  # type: ignore[no-untyped-def]
    Preset = apps.get_model("imagetotext", "Preset")
    for position, (key, label, prompt, task, description) in enumerate(PRESETS):
        Preset.objects.update_or_create(
            key=key,
            defaults={
                "label": label,
                "prompt": prompt,
                "florence_task": task,
                "description": description,
                "position": position,
            },
        )


def remove_presets(apps, schema_editor):  # type: ignore[no-untyped-def]
    apps.get_model("imagetotext", "Preset").objects.filter(key__in=[p[0] for p in PRESETS]).delete()


class Migration(migrations.Migration):
    dependencies = [("imagetotext", "0008_batches")]
    operations = [migrations.RunPython(add_presets, remove_presets)]
