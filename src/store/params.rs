//! Statement parameters with their PostgreSQL types. Every statement goes as the unnamed statement
//! of the extended protocol (`query_typed`): Parse, Bind and Execute in one round trip, and no
//! named prepared statement, which RDS Proxy would pin the session for.

use std::borrow::Cow;
use std::fmt::Debug;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use tokio_postgres::types::{Json, ToSql, Type};
use uuid::Uuid;

/// A parameter and the type it is sent as.
pub(super) type Typed<'a> = (&'a (dyn ToSql + Sync), Type);

/// A Rust value and the PostgreSQL type it is sent as.
pub(super) trait Param: ToSql + Sync {
    const TYPE: Type;
}

/// A value that can be an element of an array parameter.
pub(super) trait Element {
    const ARRAY: Type;
}

pub(super) fn typed<P: Param>(value: &P) -> Typed<'_> {
    (value, P::TYPE)
}

macro_rules! scalars {
    ($($rust:ty => $sql:ident, $array:ident;)*) => {$(
        impl Param for $rust {
            const TYPE: Type = Type::$sql;
        }
        impl Element for $rust {
            const ARRAY: Type = Type::$array;
        }
    )*};
}

scalars! {
    bool => BOOL, BOOL_ARRAY;
    i32 => INT4, INT4_ARRAY;
    i64 => INT8, INT8_ARRAY;
    f64 => FLOAT8, FLOAT8_ARRAY;
    String => TEXT, TEXT_ARRAY;
    &str => TEXT, TEXT_ARRAY;
    Cow<'_, str> => TEXT, TEXT_ARRAY;
    Decimal => NUMERIC, NUMERIC_ARRAY;
    DateTime<Utc> => TIMESTAMPTZ, TIMESTAMPTZ_ARRAY;
    Uuid => UUID, UUID_ARRAY;
}

impl<T: Param> Param for Option<T> {
    const TYPE: Type = T::TYPE;
}

impl<T: Element> Element for Option<T> {
    const ARRAY: Type = T::ARRAY;
}

impl<T: Element + ToSql + Sync> Param for Vec<T> {
    const TYPE: Type = T::ARRAY;
}

impl<T: Element + ToSql + Sync> Param for &[T] {
    const TYPE: Type = T::ARRAY;
}

impl<T: Serialize + Debug + Sync> Param for Json<T> {
    const TYPE: Type = Type::JSONB;
}
