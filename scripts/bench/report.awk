# The markdown rows of scripts/bench.sh from its results (tab-separated:
# store, measure, round, A, B; B is "-" for a measure without a comparison).
# Per measure: the median of A, of B, and of the per-round ratios A/B, then each round's
# ratio (or each round's A when there is no B). Measures keep the order they ran in.

function median(list,    n, v, i, j, t) {
    n = split(list, v, " ")
    for (i = 2; i <= n; i++) {
        t = v[i] + 0
        for (j = i - 1; j >= 1 && v[j] + 0 > t; j--) v[j + 1] = v[j]
        v[j + 1] = t
    }
    if (n % 2) return v[(n + 1) / 2]
    return (v[n / 2] + v[n / 2 + 1]) / 2
}

function fmt(x) {
    if (x >= 100) return sprintf("%.0f", x)
    if (x >= 10) return sprintf("%.1f", x)
    return sprintf("%.2f", x)
}

{
    key = $1 SUBSEP $2
    if (!(key in seen)) { seen[key] = 1; order[++count] = key; store[key] = $1; measure[key] = $2 }
    as[key] = as[key] " " $4
    if ($5 != "-") {
        bs[key] = bs[key] " " $5
        ratio = ($5 + 0 > 0) ? $4 / $5 : 0
        rs[key] = rs[key] " " ratio
        rounds[key] = rounds[key] (rounds[key] == "" ? "" : ", ") sprintf("%.2f", ratio)
    } else {
        rounds[key] = rounds[key] (rounds[key] == "" ? "" : ", ") fmt($4 + 0)
    }
}

END {
    for (i = 1; i <= count; i++) {
        key = order[i]
        a = fmt(median(as[key]))
        if (key in bs) {
            b = fmt(median(bs[key]))
            r = "**" sprintf("%.2f", median(rs[key])) "**"
        } else {
            b = "—"
            r = "—"
        }
        printf "| %s | %s | %s | %s | %s | %s |\n", store[key], measure[key], a, b, r, rounds[key]
    }
}
