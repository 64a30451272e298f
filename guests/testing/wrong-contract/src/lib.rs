//! Test guest: exports an unrelated interface instead of the transform.

wit_bindgen::generate!({ path: "wit", world: "other" });

struct Other;

impl exports::example::other::greeter::Guest for Other {
    fn greet(name: String) -> String {
        format!("hello {name}")
    }
}

export!(Other);
