"""Messages in English and Persian, chosen by ``Accept-Language`` or the page's switch.

The bots' real users read Persian; every string a person sees comes from here
(API error texts stay English, with a ``code`` a page can translate).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

LANGS = ("en", "fa")
DEFAULT_LANG = "en"
RTL = frozenset({"fa"})

_PERSIAN_DIGITS = str.maketrans("۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩", "01234567890123456789")


def ascii_digits(text: str) -> str:
    """Persian and Arabic-Indic digits to ASCII: people type national ids on Persian keyboards."""
    return text.translate(_PERSIAN_DIGITS)


@dataclass(frozen=True)
class Text:
    """A string in every supported language."""

    en: str
    fa: str

    def __call__(self, lang: str) -> str:
        return self.fa if lang == "fa" else self.en


def pick_lang(accept_language: str | None, override: str | None = None) -> str:
    """The page language: an explicit choice, else the best match in Accept-Language."""
    if override in LANGS:
        return override
    if not accept_language:
        return DEFAULT_LANG
    best, best_q = DEFAULT_LANG, -1.0
    for part in accept_language.split(",")[:20]:
        tag, _, params = part.strip().partition(";")
        lang = tag.strip().lower().split("-")[0]
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if lang in LANGS and q > best_q:
            best, best_q = lang, q
    return best


FIELD_ERRORS: Mapping[str, Text] = {
    "required": Text("This field is required.", "این فیلد الزامی است."),
    "type": Text("Enter text here.", "اینجا متن وارد کنید."),
    "number": Text("Enter a number.", "یک عدد وارد کنید."),
    "min_value": Text("Must be at least {min}.", "باید دست‌کم {min} باشد."),
    "max_value": Text("Must be at most {max}.", "باید حداکثر {max} باشد."),
    "min_length": Text("Must be at least {min} characters.", "باید دست‌کم {min} نویسه باشد."),
    "max_length": Text("Must be at most {max} characters.", "باید حداکثر {max} نویسه باشد."),
    "pattern": Text("{hint}", "{hint_fa}"),
    "choice": Text("Choose one of the options.", "یکی از گزینه‌ها را انتخاب کنید."),
    "unknown": Text("This field is not part of the form.", "این فیلد جزو فرم نیست."),
}


def field_error(code: str, lang: str = DEFAULT_LANG, **params: object) -> str:
    template = FIELD_ERRORS[code](lang)
    return template.format(**{k: local_digits(v, lang) for k, v in params.items()})


# --------------------------------------------------------------------------- pages
#
# Everything the pages (and static/progress.js, which receives its share as JSON)
# say to a person. Keys are stable; ``{name}`` placeholders are filled by ``ui``.

_FA_DIGITS = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")
#: Unicode first-strong isolate … pop: keeps a phone number or code readable inside RTL text
ISOLATE = ("\u2068", "\u2069")


def local_digits(text: object, lang: str) -> str:
    """Digits as the reader writes them: Persian digits on Persian pages."""
    return str(text).translate(_FA_DIGITS) if lang == "fa" else str(text)


UI: Mapping[str, Text] = {
    # frame
    "tagline": Text("Long jobs, watched live.", "کارهای طولانی، زنده و لحظه‌به‌لحظه."),
    "language": Text("Language", "زبان"),
    "nav_history": Text("Your requests", "درخواست‌های شما"),
    "skip": Text("Skip to content", "رفتن به محتوا"),
    "footer": Text(
        "Your details are used only for this request and kept for a short while.",
        "اطلاعات شما فقط برای همین درخواست استفاده و مدت کوتاهی نگه داشته می‌شود.",
    ),
    "all_services": Text("All services", "همه خدمات"),
    # catalog
    "catalog_title": Text("What would you like to do?", "چه کاری برایتان انجام دهیم؟"),
    "catalog_intro": Text(
        "Pick a service and watch it work, step by step. If it needs something from you — "
        "like the code texted to your phone — we will ask right here.",
        "یک خدمت را انتخاب کنید و انجام کار را مرحله‌به‌مرحله ببینید. اگر چیزی از شما لازم "
        "باشد، مثل کدی که به گوشی‌تان پیامک می‌شود، همین‌جا می‌پرسیم.",
    ),
    "takes_about": Text("About {duration}", "حدود {duration}"),
    "needs_code": Text("Asks for an SMS code", "کد پیامکی می‌خواهد"),
    "choose": Text("Start", "شروع"),
    "minutes": Text("{n} min", "{n} دقیقه"),
    "seconds": Text("{n} s", "{n} ثانیه"),
    # form
    "form_submit": Text("Start", "شروع کن"),
    "form_errors": Text("Please fix the fields marked below.", "لطفاً موارد مشخص‌شده را اصلاح کنید."),
    "form_rate_limited": Text(
        "You have started many requests in a short time. Try again in {seconds} seconds.",
        "در زمان کوتاهی درخواست‌های زیادی ثبت کرده‌اید. {seconds} ثانیه دیگر دوباره امتحان کنید.",
    ),
    "form_notify_hint": Text(
        "You can switch tabs while it works: we will call you back when it needs you or when it is done.",
        "در حین کار می‌توانید به زبانه دیگری بروید؛ هر وقت به شما نیاز شد یا کار تمام شد خبرتان می‌کنیم.",
    ),
    "optional": Text("optional", "اختیاری"),
    "example": Text("For example {example}", "مثلاً {example}"),
    "starting": Text("Starting…", "در حال شروع…"),
    "choose_option": Text("Choose…", "انتخاب کنید…"),
    # progress
    "status_pending": Text("In the queue", "در صف انتظار"),
    "status_processing": Text("Working on it", "در حال انجام"),
    "status_waiting_otp": Text("We need your code", "کد تأیید لازم است"),
    "status_waiting_input": Text("We need your answer", "پاسخ شما لازم است"),
    "status_completed": Text("Done", "انجام شد"),
    "status_failed": Text("That did not work", "انجام نشد"),
    "status_cancelled": Text("Cancelled", "لغو شد"),
    "progress": Text("Progress", "پیشرفت"),
    "time_left": Text("Time left", "زمان باقی‌مانده"),
    "almost_done": Text("Almost done…", "تقریباً تمام است…"),
    "paused": Text("Waiting for your code", "منتظر کد شما"),
    "paused_input": Text("Waiting for your answer", "منتظر پاسخ شما"),
    "steps": Text("Steps", "مراحل"),
    "leave_tab": Text(
        "You can leave this tab open in the background; we will call you back.",
        "می‌توانید این زبانه را در پس‌زمینه باز بگذارید؛ خبرتان می‌کنیم.",
    ),
    "otp_title": Text("Enter the code from your text message", "کد پیامک‌شده را وارد کنید"),
    "otp_sent_to": Text("We texted a code to", "کد به این شماره پیامک شد:"),
    "otp_label": Text("Code", "کد تأیید"),
    "otp_submit": Text("Confirm", "تأیید"),
    "otp_wrong": Text(
        "That code was not accepted. Check it and try again.",
        "این کد پذیرفته نشد. آن را بررسی کنید و دوباره وارد کنید.",
    ),
    # the other prompts (server.domain.prompts)
    "input_title_captcha": Text("Type the characters in the picture", "نویسه‌های تصویر را بنویسید"),
    "input_title_choice": Text("Choose one to go on", "برای ادامه یکی را انتخاب کنید"),
    "input_title_confirm": Text("Confirm to go on", "برای ادامه تأیید کنید"),
    "input_title_text": Text("Answer to go on", "برای ادامه پاسخ دهید"),
    "captcha_alt": Text("A picture of {n} distorted letters and digits", "تصویری از {n} حرف و رقم کج‌ومعوج"),
    "captcha_label": Text("Characters in the picture", "نویسه‌های تصویر"),
    "input_label": Text("Your answer", "پاسخ شما"),
    "input_submit": Text("Send", "ارسال"),
    "confirm_yes": Text("Yes", "بله"),
    "confirm_no": Text("No", "خیر"),
    "input_wrong": Text(
        "That answer was not accepted. Check it and try again.",
        "این پاسخ پذیرفته نشد. آن را بررسی کنید و دوباره تلاش کنید.",
    ),
    "attempts_one": Text("1 try left", "۱ بار دیگر می‌توانید امتحان کنید"),
    "attempts_other": Text("{n} tries left", "{n} بار دیگر می‌توانید امتحان کنید"),
    "resend": Text("Send a new code", "ارسال کد جدید"),
    "resend_in": Text("New code available in {time}", "ارسال دوباره تا {time} دیگر"),
    "resent": Text("A new code is on its way.", "کد جدید در راه است."),
    "demo_outbox": Text("Demo mode: open the phone to read the code", "حالت نمایشی: برای دیدن کد، گوشی را باز کنید"),
    "cancel": Text("Cancel this request", "لغو این درخواست"),
    "cancel_confirm": Text(
        "Stop this request? What has been done so far is lost.",
        "این درخواست متوقف شود؟ کارهای انجام‌شده از بین می‌رود.",
    ),
    "cancel_yes": Text("Yes, stop it", "بله، متوقف شود"),
    "failed_title": Text("What went wrong", "چه مشکلی پیش آمد"),
    "try_again": Text("Try again", "دوباره امتحان کنید"),
    "cancelled_text": Text("You stopped this request.", "این درخواست را متوقف کردید."),
    "new_request": Text("Start a new request", "ثبت درخواست جدید"),
    "expired_text": Text(
        "This request is no longer available — it may have expired.",
        "این درخواست دیگر در دسترس نیست؛ احتمالاً منقضی شده است.",
    ),
    "embed_token_expired": Text(
        "This view has expired. Reload the page to keep following the request.",
        "زمان این نما تمام شده است. برای ادامهٔ پیگیری درخواست، صفحه را دوباره بارگذاری کنید.",
    ),
    "cancel_no": Text("No, keep it", "نه، ادامه بده"),
    # Shown by <longrun-progress> before it has its words from the server (a copy lives in
    # static/longrun-progress.js; tests/test_embed.py checks that it matches).
    "embed_unreachable": Text("Longrun cannot be reached. Retrying…", "به Longrun دسترسی نیست. دوباره تلاش می‌کنیم…"),
    # The demo host app (server/devtools/hostapp.py): a shop that embeds Longrun's element.
    "host_name": Text("Acme Loans", "وام‌های آکمه"),
    "host_intro": Text(
        "Check your credit score before you apply. It takes about a minute; you can keep this page open.",
        "پیش از درخواست وام، رتبهٔ اعتباری خود را ببینید. حدود یک دقیقه طول می‌کشد؛ این صفحه را باز نگه دارید.",
    ),
    "host_signed_in": Text("Signed in as {user}", "واردشده با نام {user}"),
    "host_start": Text("Check my credit score", "رتبهٔ اعتباری من را ببین"),
    "host_yours": Text("Your inquiries", "استعلام‌های شما"),
    "host_none": Text("No inquiries yet.", "هنوز استعلامی ندارید."),
    "host_back": Text("Back to your account", "بازگشت به حساب شما"),
    "host_saved": Text("Saved to your account: score {score}.", "در حساب شما ذخیره شد: رتبهٔ {score}."),
    "host_down": Text("The inquiry service is not available right now.", "سرویس استعلام اکنون در دسترس نیست."),
    "conn_connecting": Text("Connecting…", "در حال اتصال…"),
    "conn_live": Text("Live", "زنده"),
    "conn_ws": Text("Live · WebSocket", "زنده · WebSocket"),
    "conn_sse": Text("Live · event stream", "زنده · جریان رویداد"),
    "timeline": Text("What happened", "آنچه گذشت"),
    "timeline_away": Text("while you were offline", "وقتی آفلاین بودید"),
    "timeline_gap": Text(
        "Some earlier updates could not be recovered; this is the latest state.",
        "برخی به‌روزرسانی‌های قبلی بازیابی نشد؛ این آخرین وضعیت است.",
    ),
    "conn_polling": Text("Updating every few seconds", "به‌روزرسانی هر چند ثانیه"),
    "conn_offline": Text("Connection lost — retrying…", "اتصال قطع شد؛ دوباره تلاش می‌کنیم…"),
    "noscript_note": Text("This page refreshes itself every few seconds.", "این صفحه هر چند ثانیه خودش به‌روز می‌شود."),
    "refresh": Text("Refresh", "به‌روزرسانی"),
    "sending": Text("Sending…", "در حال ارسال…"),
    "title_otp": Text("Code needed", "کد لازم است"),
    "title_input": Text("Answer needed", "پاسخ لازم است"),
    "title_ready": Text("Result ready", "نتیجه آماده است"),
    "title_failed": Text("Request failed", "درخواست ناموفق بود"),
    "notify_otp": Text(
        "{service}: enter the code we texted to your phone.", "{service}: کدی را که به گوشی‌تان پیامک شد وارد کنید."
    ),
    "notify_input": Text("{service}: we need your answer to go on.", "{service}: برای ادامه به پاسخ شما نیاز داریم."),
    "notify_ready": Text("{service}: your result is ready.", "{service}: نتیجه آماده است."),
    "notify_failed": Text("{service}: the request did not work.", "{service}: درخواست انجام نشد."),
    # action errors (API / socket error codes)
    "err_otp_pending": Text("A code is already being checked — one moment.", "کدی در حال بررسی است؛ لحظه‌ای صبر کنید."),
    "err_not_waiting_for_otp": Text("No code is needed right now.", "در حال حاضر کدی لازم نیست."),
    "err_otp_attempts_exhausted": Text(
        "Too many codes were tried. Please start a new request.",
        "تعداد تلاش‌ها از حد مجاز گذشت. لطفاً درخواست جدیدی ثبت کنید.",
    ),
    "err_resend_too_early": Text("You can ask for a new code a little later.", "کمی بعد می‌توانید کد جدید بخواهید."),
    "err_resend_exhausted": Text(
        "No more codes can be sent for this request.", "برای این درخواست کد دیگری فرستاده نمی‌شود."
    ),
    "err_already_finished": Text("This request has already finished.", "این درخواست قبلاً تمام شده است."),
    "err_otp_invalid": Text("Enter the digits of the code.", "رقم‌های کد را وارد کنید."),
    "err_otp_wrong_length": Text(
        "The code has a different number of digits: check it.", "تعداد رقم‌های کد درست نیست؛ آن را بررسی کنید."
    ),
    "err_input_pending": Text(
        "Your answer is already being checked — one moment.", "پاسخ شما در حال بررسی است؛ لحظه‌ای صبر کنید."
    ),
    "err_not_waiting_for_input": Text("No answer is needed right now.", "در حال حاضر پاسخی لازم نیست."),
    "err_input_attempts_exhausted": Text(
        "Too many answers were tried. Please start a new request.",
        "تعداد تلاش‌ها از حد مجاز گذشت. لطفاً درخواست جدیدی ثبت کنید.",
    ),
    "err_input_invalid": Text("Check your answer and try again.", "پاسخ خود را بررسی کنید و دوباره تلاش کنید."),
    "err_prompt_expired": Text("The time to answer has run out.", "مهلت پاسخ دادن تمام شده است."),
    "err_rate_limited": Text("Too many tries — wait a moment.", "تلاش‌ها زیاد بود؛ کمی صبر کنید."),
    "err_network": Text(
        "Could not reach the server. Check your connection and try again.",
        "ارتباط با سرور برقرار نشد. اتصال خود را بررسی کنید و دوباره امتحان کنید.",
    ),
    "err_unavailable": Text(
        "The service is briefly unavailable. Try again in a moment.",
        "سرویس لحظاتی در دسترس نیست. چند لحظه دیگر دوباره امتحان کنید.",
    ),
    "err_generic": Text("That did not work. Please try again.", "انجام نشد. لطفاً دوباره امتحان کنید."),
    # result
    "result_title": Text("Your result", "نتیجه شما"),
    "result_took": Text("Finished in {time}.", "در {time} انجام شد."),
    "result_kept": Text(
        "This page stays available for {minutes} minutes.", "این صفحه تا {minutes} دقیقه در دسترس است."
    ),
    "result_none": Text("None", "هیچ"),
    "result_open": Text("Open", "باز کردن"),
    # errors
    "e404_title": Text("We could not find that", "پیدا نشد"),
    "e404_request": Text(
        "This request does not exist or has expired. Requests are kept for a while after their last update.",
        "این درخواست وجود ندارد یا منقضی شده است. درخواست‌ها مدتی پس از آخرین تغییر نگه داشته می‌شوند.",
    ),
    "e404_page": Text("There is no page at this address.", "صفحه‌ای با این نشانی وجود ندارد."),
    "e403_title": Text("This form has expired", "این فرم منقضی شده است"),
    "e403_text": Text(
        "For your safety we could not accept it. Go back, reload the page and try again (cookies need to be on).",
        "برای امنیت شما پذیرفته نشد. به صفحه قبل برگردید، آن را دوباره بارگذاری کنید و دوباره امتحان "
        "کنید (کوکی‌ها باید فعال باشند).",
    ),
    "e429_title": Text("A little too fast", "کمی آهسته‌تر"),
    "e429_text": Text(
        "Too many tries in a short time. Try again in {seconds} seconds.",
        "در زمان کوتاهی تلاش‌های زیادی شد. {seconds} ثانیه دیگر دوباره امتحان کنید.",
    ),
    "e503_title": Text("We will be right back", "به‌زودی برمی‌گردیم"),
    "e503_text": Text(
        "The service is briefly unavailable. Please try again in a moment.",
        "سرویس لحظاتی در دسترس نیست. لطفاً چند لحظه دیگر دوباره امتحان کنید.",
    ),
    "e_title": Text("Something went wrong", "مشکلی پیش آمد"),
    "e_text": Text("Please try again.", "لطفاً دوباره امتحان کنید."),
    "reload": Text("Try again", "تلاش دوباره"),
    # demo outbox
    "outbox_title": Text("Demo phone", "گوشی نمایشی"),
    "outbox_intro": Text(
        "In demo mode the bots text their codes here instead of to a real phone.",
        "در حالت نمایشی، ربات‌ها کدها را به‌جای گوشی واقعی اینجا می‌فرستند.",
    ),
    "outbox_empty": Text("No messages yet.", "هنوز پیامی نیامده است."),
    "outbox_down": Text("The demo bots are not answering right now.", "ربات‌های نمایشی الان پاسخ نمی‌دهند."),
    "outbox_back": Text("Back to the request", "بازگشت به درخواست"),
    "outbox_code": Text("Code", "کد"),
}

#: Persian for the record's own messages and failure reasons (English: server.domain.messages).
MESSAGES_FA: Mapping[str, str] = {
    "queued": "در انتظار یک پردازشگر آزاد…",
    "starting": "در حال اتصال به سرویس…",
    "retrying": "سرویس پاسخ نمی‌دهد؛ دوباره تلاش می‌کنیم (تلاش {attempt} از {max}).",
    "working": "سرویس در حال انجام کار است…",
    "otp": "کدی را که به {destination} فرستادیم وارد کنید.",
    "otp_wrong": "این کد پذیرفته نشد. آن را بررسی کنید و دوباره وارد کنید.",
    "checking": "در حال بررسی کد…",
    "resending": "در حال ارسال کد جدید…",
    "otp_exhausted": "کدهای نادرست زیادی وارد شد. لطفاً درخواست تازه‌ای ثبت کنید.",
    "done": "انجام شد.",
    "failed": "درخواست ناموفق بود.",
    "cancelled": "لغو شد.",
    "silent": "سرویس دیگر پاسخ نمی‌دهد. لطفاً دوباره تلاش کنید.",
    "overdue": "سرویس کار را به‌موقع تمام نکرد. لطفاً بعداً دوباره تلاش کنید.",
    "otp_expired": "کد به‌موقع وارد نشد. لطفاً درخواست تازه‌ای ثبت کنید.",
    "never_started": "چند ساعت هیچ پردازشگری نتوانست درخواست را بپذیرد. لطفاً دوباره تلاش کنید.",
    "service_gone": "این سرویس دیگر ارائه نمی‌شود.",
    "bad_answer": "سرویس پاسخی فرستاد که نتوانستیم آن را بفهمیم.",
    "otp_check_unreachable": "برای بررسی کد شما به سرویس دسترسی پیدا نکردیم. لطفاً از نو شروع کنید.",
    "otp_check_failed": "سرویس نتوانست کد را بررسی کند: {error}",
    "bot_unavailable": "سرویس الان در دسترس نیست. لطفاً چند دقیقه دیگر دوباره تلاش کنید.",
    "bot_gave_up": "سرویس نتوانست درخواست را به پایان برساند. لطفاً بعداً دوباره تلاش کنید.",
    "bot_gave_up_because": "سرویس نتوانست درخواست را به پایان برساند: {error}",
    "worker_lost": "پردازشگری که درخواست شما را اجرا می‌کرد ناگهان متوقف شد. لطفاً از نو شروع کنید.",
    "queue_failed": "درخواست در صف قرار نگرفت. لطفاً دوباره تلاش کنید.",
    "internal": "مشکلی در سمت ما پیش آمد. لطفاً دوباره تلاش کنید.",
    "otp_expired_unchecked": "کد پیش از آنکه بتوانیم بررسی‌اش کنیم منقضی شد. لطفاً دوباره واردش کنید.",
    "resend_failed": "ارسال کد جدید ممکن نشد: {error}",
    "input_captcha": "نویسه‌هایی را که در تصویر می‌بینید بنویسید.",
    "input_choice": "برای ادامه یکی را انتخاب کنید.",
    "input_confirm": "برای ادامه تأیید کنید.",
    "input_text": "برای ادامه به پرسش پاسخ دهید.",
    "input_wrong": "این پاسخ پذیرفته نشد. آن را بررسی کنید و دوباره تلاش کنید.",
    "checking_input": "در حال بررسی پاسخ شما…",
    "input_exhausted": "پاسخ‌های نادرست زیادی وارد شد. لطفاً درخواست تازه‌ای ثبت کنید.",
    "input_expired": "به پرسش به‌موقع پاسخ داده نشد. لطفاً درخواست تازه‌ای ثبت کنید.",
    "input_check_unreachable": "برای بررسی پاسخ شما به سرویس دسترسی پیدا نکردیم. لطفاً از نو شروع کنید.",
    "input_check_failed": "سرویس نتوانست پاسخ را بررسی کند: {error}",
    "input_expired_unchecked": "پاسخ شما پیش از آنکه بتوانیم بررسی‌اش کنیم منقضی شد. لطفاً دوباره پاسخ دهید.",
}

#: labels for the fields bots put in ``result_data``; anything else is shown humanized
RESULT_LABELS: Mapping[str, Text] = {
    "score": Text("Credit score", "امتیاز اعتباری"),
    "rating": Text("Rating", "رتبه"),
    "report_id": Text("Report ID", "شناسه گزارش"),
    "open_loans": Text("Open loans", "وام‌های فعال"),
    "checked_at": Text("Checked at", "زمان استعلام"),
    "plate": Text("Plate", "پلاک"),
    "fines": Text("Fines", "جریمه‌ها"),
    "total": Text("Total", "جمع کل"),
    "date": Text("Date", "تاریخ"),
    "place": Text("Place", "محل"),
    "amount": Text("Amount", "مبلغ"),
    "video_url": Text("Video", "ویدیو"),
    "duration_seconds": Text("Length (seconds)", "مدت (ثانیه)"),
    "prompt": Text("Prompt", "متن درخواست"),
    "tracking_number": Text("Tracking number", "کد رهگیری"),
    "delivered": Text("Delivered", "تحویل شده"),
    "last_seen": Text("Last seen at", "آخرین محل"),
    "estimated_delivery": Text("Expected delivery", "تحویل پیش‌بینی‌شده"),
    "journey": Text("Journey", "مسیر"),
    "event": Text("Event", "رویداد"),
}


def ui(key: str, lang: str = DEFAULT_LANG, **params: object) -> str:
    """A page string in ``lang`` with its placeholders filled (numbers in the reader's digits)."""
    template = UI[key](lang)
    if not params:
        return template
    return template.format(**{k: local_digits(v, lang) if isinstance(v, int) else v for k, v in params.items()})


def ui_strings(lang: str, prefix: str = "") -> dict[str, str]:
    """Every page string in ``lang`` (unfilled), for a page's script."""
    return {k: t(lang) for k, t in UI.items() if k.startswith(prefix)}
