//! A component built for another world: it exports `run` instead of the
//! plugin functions and imports a function the host does not provide. The
//! host must refuse it at load and say why.

wit_bindgen::generate!({
    inline: "
        package other:thing@1.0.0;

        interface secrets {
            get: func(name: string) -> string;
        }

        world other {
            import secrets;
            export run: func() -> string;
            export describe: func() -> u32;
        }
    ",
    world: "other",
});

struct Other;

impl Guest for Other {
    fn run() -> String {
        other::thing::secrets::get("token")
    }

    fn describe() -> u32 {
        7
    }
}

export!(Other);
