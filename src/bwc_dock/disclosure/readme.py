"""README-VERIFY.txt: for a recipient who has never heard of bwc-dock."""

from __future__ import annotations

README_VERIFY = """\
HOW TO CHECK THIS EVIDENCE PACKAGE
==================================

This folder is a "bag" (the BagIt format, RFC 8493) of body-worn-camera video that
{organization} disclosed to you. You can check it yourself, on any Linux or macOS
computer, with free tools. You need no account, no vendor software, and nothing
from the agency except its public key.

What is in it
-------------
  data/                      the video clips and their companion files (.JPG, .GPS ...)
  manifest-sha256.txt        the SHA-256 fingerprint of every file in data/
  custody/                   the custody records of each clip, exactly as the agency's
                             evidence storage holds them (the camera's own file name,
                             the dock that read it, when, and its SHA-256)
  audit/audit-rows.json      the agency's tamper-evident log entries about these clips
  CERTIFICATE.txt            the list of clips with their fingerprints, in plain words
  disclosure.json            which files belong to which clip (for verify_bag.py)
  tagmanifest-sha256.txt     the fingerprint of every file outside data/
  tagmanifest-sha256.txt.sig the agency's signature over tagmanifest-sha256.txt
  agency-allowed_signers     a copy of the agency's public key (see step 3: do not rely
                             on this copy alone)
  verify_bag.py              a small checking program (Python 3, standard library only)

A SHA-256 fingerprint changes completely if a single bit of a file changes. The
fingerprints of the clips are the ones taken when each clip was first read off the
camera; the signature proves the agency issued these lists.

Check it, step by step
----------------------
Open a terminal in this folder.

1. Every video file is complete and unchanged:

       sha256sum -c manifest-sha256.txt          (macOS: shasum -a 256 -c ...)

   Every line must say OK.

2. Nothing outside data/ was changed:

       sha256sum -c tagmanifest-sha256.txt

3. The agency signed these lists. Get the agency's public key FROM THE AGENCY (its
   web site, a letter, a phone call to compare the fingerprint), not only from this
   folder: anyone who altered the bag could also replace the key inside it. Save it as
   a file in the form of agency-allowed_signers, then:

       ssh-keygen -Y verify -f AGENCY_KEY_FILE -I NAME -n bwc-disclosure \\
           -s tagmanifest-sha256.txt.sig < tagmanifest-sha256.txt

   where NAME is the first word of the line in AGENCY_KEY_FILE. It must say
   "Good signature". Steps 1 to 3 together prove the files are the ones the agency
   signed: a changed file fails step 1 or 2, and a recomputed list fails step 3.

4. Or do all of it, plus the custody records, in one go:

       python3 verify_bag.py . --allowed-signers AGENCY_KEY_FILE

   It prints VERIFIED and exits 0 when everything holds; it prints each PROBLEM and
   exits 1 when anything is missing, added, changed, or not signed by that key. It
   also checks that every file not listed is reported, that each clip's fingerprint
   equals the one in its custody record, and that no link or odd file is present.
   verify_bag.py came inside the bag: if you do not trust it, steps 1 to 3 need
   nothing from the bag but the files themselves.

A "fast" or "size-only" check is NOT a verification. Some BagIt tools offer a quick
mode that only compares file counts and sizes (the Payload-Oxum line). An edited
video of the same size passes it. Always compute every fingerprint (steps 1 to 4,
or "bagit.py --validate" without --fast).

Also note what BagIt tools alone cannot see: someone who edits a file and then
recomputes the manifests produces a bag that "bagit.py --validate" accepts. Only the
signature (step 3 or 4) shows that such a bag is not the agency's.

Passing on part of this bag (for example prosecutor to defence)
----------------------------------------------------------------
    python3 verify_bag.py rebag THIS_BAG --to NEW_BAG --select CLIP [--select CLIP ...] \\
        --disclosed-by "..." --disclosed-to "..."

CLIP is a clip's file name as in data/ (with or without its folder). The new bag
holds the chosen clips and their companion files byte for byte, their custody records,
and, under parent/, the agency's signed lists of this bag. Its bag-info.txt names the
SHA-256 of this bag's tagmanifest-sha256.txt (Parent-Tagmanifest-SHA256), and
verify_bag.py run on the new bag checks that every file in it is unchanged from the
bag the agency signed. Note: the parent's lists under parent/ name every file of the
original bag with its fingerprint (names and fingerprints only, no content).

Sending back a receipt
----------------------
To confirm what you received, run

    python3 verify_bag.py receipt . --allowed-signers AGENCY_KEY_FILE --by "Your name" \\
        > receipt.txt

which checks the bag and, only when it verifies, prints a receipt naming the case,
the fingerprint of tagmanifest-sha256.txt and of the signature, the number of files
and bytes, and when you checked. Sign it with your own key and send both files back:

    ssh-keygen -Y sign -f ~/.ssh/id_ed25519 -n bwc-disclosure-receipt receipt.txt

(any signature the agency can check will do, e.g. gpg --clearsign). The agency keeps
the SHA-256 of every signature it issued, so it can match your receipt to this bag.
"""


def readme_text(organization: str) -> str:
    return README_VERIFY.format(organization=organization)
