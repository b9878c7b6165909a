//! The active ISO 4217 currency codes that money in events may be counted in.
//!
//! Money is an integer of minor units, so a code qualifies only if ISO 4217 gives it a
//! minor unit. The list is ISO 4217 List One (active codes) as of 2026, taken from Debian's
//! iso-codes 4.15 and brought up to date by hand:
//!
//! * left out, having no minor unit: precious metals (XAG, XAU, XPD, XPT), bond-market
//!   units (XBA, XBB, XBC, XBD), XDR, XSU, XUA, the testing code XTS and XXX ("no
//!   currency");
//! * left out, withdrawn: HRK (Croatia uses EUR since 2023), ZWL (replaced by ZWG in
//!   2024), ANG (replaced by XCG in 2025), BGN (Bulgaria uses EUR since 2026), SLL
//!   (redenominated as SLE);
//! * added: XCG (Caribbean guilder, 2025), ZWG (Zimbabwe Gold, 2024).
//!
//! It is data: when ISO amends the list, amend it here (keep it sorted; a test checks).

/// Every currency code accepted in events and requests: active ISO 4217 codes with a
/// minor unit, upper case, sorted (so lookups are a binary search).
pub const ACTIVE_CURRENCIES: [&str; 165] = [
    "AED", "AFN", "ALL", "AMD", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BHD",
    "BIF", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF",
    "CHE", "CHF", "CHW", "CLF", "CLP", "CNY", "COP", "COU", "CRC", "CUC", "CUP", "CVE", "CZK",
    "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS",
    "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD",
    "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD",
    "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT",
    "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK",
    "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD",
    "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP",
    "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS",
    "UAH", "UGX", "USD", "USN", "UYI", "UYU", "UYW", "UZS", "VED", "VES", "VND", "VUV", "WST",
    "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

/// Whether `code` is exactly (upper case) one of [`ACTIVE_CURRENCIES`].
pub fn is_active_currency(code: &str) -> bool {
    ACTIVE_CURRENCIES.binary_search(&code).is_ok()
}

/// Checks a currency code: `None` if it is one of [`ACTIVE_CURRENCIES`], else what is
/// wrong. Lower or mixed case is refused (with a hint), never silently upper-cased: the
/// code is compared and grouped by as text downstream.
pub fn validate_currency(code: &str) -> Option<String> {
    if is_active_currency(code) {
        return None;
    }
    let upper = code.to_ascii_uppercase();
    Some(if code.is_empty() {
        "must be an ISO 4217 currency code such as EUR, got an empty string".to_owned()
    } else if upper != code && is_active_currency(&upper) {
        format!("must be upper case: {upper}, got {code:?}")
    } else {
        format!("must be an active ISO 4217 currency code such as EUR or USD, got {code:?}")
    })
}
