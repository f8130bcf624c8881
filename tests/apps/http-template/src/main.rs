// The template's own source, so the test boots exactly what users get.
include!("../../../../templates/http/src/main.rs");
