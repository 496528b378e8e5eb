"""Sentences for the recognition tests: ordinary ones, and an appointment-booking agent's domain
with the phrase hints its playbook would carry."""

ORDINARY = [
    "The weather is nice today and the sun is shining.",
    "Please call me back later this afternoon.",
    "I would like to speak with someone about my account.",
    "My phone number has changed since last year.",
    "Can you tell me when the store opens tomorrow?",
    "I have been waiting for a package for two weeks.",
    "Thank you very much for your help.",
    "The meeting was moved to next Monday morning.",
    "I need to change the address on my order.",
    "Is there anyone available to answer a question?",
]

IN_DOMAIN = [
    "I would like to book an appointment for tomorrow morning.",
    "Can I see the dentist on Friday afternoon?",
    "I need to cancel my appointment on Tuesday.",
    "Is there a free slot next Wednesday at ten?",
    "Please move my cleaning to Thursday at two.",
    "I want to reschedule my checkup to Monday.",
    "Do you have anything available this evening?",
    "My appointment is on Friday at nine.",
    "Book me with the hygienist next week please.",
    "I would prefer an afternoon appointment on Tuesday.",
]

HINTS = [
    "I would like to book an appointment",
    "book me with the hygienist",
    "can I see the dentist",
    "I need to cancel my appointment",
    "I want to reschedule my checkup",
    "please move my cleaning",
    "is there a free slot",
    "do you have anything available",
    "my appointment is on",
    "I would prefer an afternoon appointment",
    "tomorrow morning",
    "this evening",
    "next week please",
    "next Wednesday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "morning afternoon evening",
    "at nine",
    "at ten",
    "at two",
    "to",
    "on",
    "at",
]
