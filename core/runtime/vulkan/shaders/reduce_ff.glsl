// Float-float ("double-single") sums for the reduction shaders (gram.comp, channel_stats.comp):
// a value is hi + lo with |lo| <= ulp(hi) / 2, about 48 significant bits. `precise` keeps the
// compiler from fusing or reassociating the error-free transformations.

// a + b = s + e exactly (Knuth's TwoSum).
vec2 twoSum(float a, float b) {
    precise float s = a + b;
    precise float bb = s - a;
    precise float e = (a - (s - bb)) + (b - bb);
    return vec2(s, e);
}

// (hi, lo) + (y.hi, y.lo), renormalised.
vec2 ffAdd(vec2 x, vec2 y) {
    vec2 s = twoSum(x.x, y.x);
    precise float e = s.y + (x.y + y.y);
    precise float h = s.x + e;
    precise float l = e - (h - s.x);
    return vec2(h, l);
}

// (hi, lo) + a float.
vec2 ffAddF(vec2 x, float a) {
    vec2 s = twoSum(x.x, a);
    precise float e = s.y + x.y;
    precise float h = s.x + e;
    precise float l = e - (h - s.x);
    return vec2(h, l);
}
