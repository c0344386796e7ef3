//! The geometry subcommands as a user runs them: JSON schemas, figures on disk, bad input.

use prism_tests::*;

#[test]
fn colors_json_lists_every_representation_and_writes_figures() {
    let m = sample("smollm2");
    let dir = TempDir::new("colors-cli");
    let v = json_of(&[
        "colors",
        m.to_str().unwrap(),
        "--permutations",
        "500",
        "--json",
        "--backend",
        "cpu",
        "--figure",
        dir.path().to_str().unwrap(),
    ]);
    let reps = v["representations"].as_array().unwrap();
    let names: Vec<&str> = reps.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names[..3], ["embed", "embed_nospace", "layer:0"]);
    assert_eq!(names.last(), Some(&"final_norm"));
    assert_eq!(reps.len(), 2 + 31 + 1);
    for r in reps {
        for k in ["rho", "p", "claim1", "claim2"] {
            assert!(!r[k].is_null(), "{k} in {}", r["name"]);
        }
        assert!(r["cosines"]["purple_blue"].is_number());
    }
    // The reference: claim 1 holds for the input embedding, claim 2 does not.
    assert_eq!(reps[0]["claim1"], true);
    assert_eq!(reps[0]["claim2"], false);
    for stem in ["colors_pca", "colors_rsa_by_layer", "colors_similarity"] {
        for ext in ["svg", "png", "csv", "json"] {
            assert!(
                dir.path().join(format!("{stem}.{ext}")).exists(),
                "{stem}.{ext}"
            );
        }
    }
    let svg = std::fs::read_to_string(dir.path().join("colors_pca.svg")).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    assert_eq!(
        doc.descendants()
            .filter(|n| n.has_tag_name("circle"))
            .count(),
        62,
        "31 color words, fill and outline"
    );
}

#[test]
fn similar_neighbors_analogy_axis_project() {
    let m = sample("minilm");
    let m = m.to_str().unwrap();
    let v = json_of(&[
        "similar",
        m,
        "red",
        "blue",
        "banana",
        "--json",
        "--backend",
        "cpu",
    ]);
    assert_eq!(v["cosine"].as_array().unwrap().len(), 3);
    assert!((v["cosine"][0][0].as_f64().unwrap() - 1.0).abs() < 1e-9);
    let v = json_of(&[
        "neighbors",
        m,
        "king",
        "--k",
        "5",
        "--json",
        "--backend",
        "cpu",
    ]);
    let n = v["neighbors"].as_array().unwrap();
    assert_eq!(n.len(), 5);
    assert_eq!(n[0]["token"], "king");
    let v = json_of(&[
        "analogy",
        m,
        "king",
        "man",
        "woman",
        "--json",
        "--backend",
        "cpu",
    ]);
    let results = v["results"].as_array().unwrap();
    assert!(!results.is_empty());
    assert!(
        results
            .iter()
            .all(|r| !["king", "man", "woman"].contains(&r["text"].as_str().unwrap_or(""))),
        "inputs are excluded"
    );
    let v = json_of(&[
        "axis",
        m,
        "--from",
        "cold",
        "--to",
        "hot",
        "ice",
        "fire",
        "warm",
        "--json",
        "--backend",
        "cpu",
    ]);
    let pos = v["positions"].as_array().unwrap();
    assert_eq!(pos.len(), 3);
    let dir = TempDir::new("project-cli");
    let fig = dir.path().join("months.svg");
    let v = json_of(&[
        "project",
        m,
        "--preset",
        "months",
        "--method",
        "tsne",
        "--json",
        "--backend",
        "cpu",
        "--figure",
        fig.to_str().unwrap(),
    ]);
    assert_eq!(v["points"].as_array().unwrap().len(), 12);
    assert!(fig.exists() && fig.with_extension("csv").exists());
    let v = json_of(&[
        "project",
        m,
        "one",
        "two",
        "three",
        "four",
        "--dims",
        "3",
        "--json",
        "--source",
        "layer:3",
        "--backend",
        "cpu",
    ]);
    assert_eq!(v["points"][0]["coords"].as_array().unwrap().len(), 3);
}

#[test]
fn geometry_bad_input_exits_2() {
    let m = sample("minilm");
    let m = m.to_str().unwrap();
    for args in [
        vec![
            "similar",
            m,
            "red",
            "blue",
            "--template",
            "no placeholder",
            "--source",
            "layer:2",
        ],
        vec!["similar", m, "red", "blue", "--source", "layer:99"],
        vec!["neighbors", m, "red", "--source", "unembed"],
        vec!["project", m, "--preset", "planets"],
        vec!["project", m, "a", "b"],
        vec!["colors", m, "--lexicon", "/nonexistent/lexicon.txt"],
    ] {
        let out = prism(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "prism {args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("internal error"),
            "{err}"
        );
    }
}
