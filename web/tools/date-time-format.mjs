// The one format messages.schema.json uses, RFC 3339 `date-time` (the same rules as
// ajv-formats' full "date-time": strict time zone), so the bundle does not carry every
// format ajv-formats knows. build-validator.mjs substitutes this module for ajv-formats.
const DATE = /^(\d\d\d\d)-(\d\d)-(\d\d)$/;
const TIME = /^(\d\d):(\d\d):(\d\d(?:\.\d+)?)(z|([+-])(\d\d)(?::?(\d\d))?)$/i;
const DAYS = [0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

function isLeapYear(year) {
  return year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
}

function date(str) {
  const m = DATE.exec(str);
  if (!m) return false;
  const year = +m[1], month = +m[2], day = +m[3];
  return month >= 1 && month <= 12 && day >= 1 && day <= (month === 2 && isLeapYear(year) ? 29 : DAYS[month]);
}

function time(str) {
  const m = TIME.exec(str);
  if (!m) return false;
  const hr = +m[1], min = +m[2], sec = +m[3];
  const sign = m[5] === "-" ? -1 : 1, tzH = +(m[6] || 0), tzM = +(m[7] || 0);
  if (tzH > 23 || tzM > 59) return false;
  if (hr <= 23 && min <= 59 && sec < 60) return true;
  const utcMin = min - tzM * sign; // leap second
  const utcHr = hr - tzH * sign - (utcMin < 0 ? 1 : 0);
  return (utcHr === 23 || utcHr === -1) && (utcMin === 59 || utcMin === -1) && sec < 61;
}

function dateTime(str) {
  const parts = str.split(/t|\s/i);
  return parts.length === 2 && date(parts[0]) && time(parts[1]);
}

export const fullFormats = { "date-time": { validate: dateTime } };
