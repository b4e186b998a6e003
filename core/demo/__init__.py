"""The demos and the worlds they are built from (maintainer code: nothing in the library imports it).

waterbirds: the Waterbirds demo's classifiers, translators, runs and its fixed classifier; imagenet9: the general
translator and the ImageNet-9 Backgrounds Challenge runs; assets: the offline set-up; worlds/: the image worlds
built from Debian's photos and stamps.
"""
