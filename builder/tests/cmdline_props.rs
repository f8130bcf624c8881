//! Property tests (proptest): whatever the environment and the arguments,
//! the builder's command-line encoder and the guest's parser
//! (`unikernel_runtime::cmdline`) agree, and the parser takes any string
//! without panicking.
use cargo_unikernel::cmdline::CommandLine;
use proptest::prelude::*;

/// Any characters, the line's own syntax among them.
fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => any::<char>(),
            4 => prop::sample::select(vec![' ', '"', '\\', '=', '\t', '-', 'v']),
        ],
        0..12,
    )
    .prop_map(|v| v.into_iter().collect())
}

/// An environment key: not the runtime's (`UNIKERNEL_*`) nor the
/// platform's (`virtio_mmio.*`) namespace, no `=`, not empty.
fn key() -> impl Strategy<Value = String> {
    text().prop_filter("a key of the app", |k| {
        !k.is_empty()
            && !k.contains('=')
            && !k.starts_with("UNIKERNEL_")
            && !k.starts_with("virtio_mmio.")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_guest_parses_back_what_the_builder_encodes(
        env in proptest::collection::vec((key(), text()), 0..5),
        options in proptest::collection::vec(("[A-Z]{1,6}", "[a-z0-9./:,]{0,8}"), 0..3),
        args in proptest::option::of(proptest::collection::vec(text(), 0..5)),
    ) {
        let env: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        let options: Vec<String> =
            options.into_iter().map(|(k, v)| format!("UNIKERNEL_{k}={v}")).collect();
        let line = CommandLine { options: options.clone(), env: env.clone(), args: args.clone() }.encode();
        let parsed = unikernel_runtime::cmdline::parse(&line);
        prop_assert_eq!(&parsed.env, &env, "line {:?}", line);
        prop_assert_eq!(&parsed.options, &options, "line {:?}", line);
        prop_assert_eq!(&parsed.args, &args, "line {:?}", line);
        prop_assert!(parsed.ignored.is_empty() && parsed.virtio_mmio.is_empty(), "line {:?}", line);
    }

    #[test]
    fn the_guest_parser_takes_any_line(line in "\\PC{0,64}", raw in text()) {
        let _ = unikernel_runtime::cmdline::parse(&line);
        let _ = unikernel_runtime::cmdline::parse(&raw);
    }
}
